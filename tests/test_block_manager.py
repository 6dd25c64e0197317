import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lite.engine import block_manager as block_manager_module
from lite.engine.block_manager import BlockManager
from lite.engine.sequence import Sequence

BLOCK_SIZE = 4


def computed(bm: BlockManager, token_ids: list[int]) -> Sequence:
    """A sequence admitted (with any prefix hit) and run through one step of its whole prompt."""
    seq = Sequence(token_ids)
    prefix_block_ids, num_cached_tokens = bm.get_computed_prefix(seq)
    assert bm.allocate_slots(seq, seq.num_tokens - num_cached_tokens, prefix_block_ids)
    seq.num_computed_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)
    return seq


def test_allocate_covers_the_requested_tokens_with_whole_blocks():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    seq = Sequence(list(range(9)))
    assert bm.allocate_slots(seq, 9)
    assert len(seq.block_ids) == 3
    assert bm.num_free_blocks == 5
    seq.num_computed_tokens = 9
    assert bm.allocate_slots(seq, 3)  # 12 tokens still fit in 3 blocks
    assert len(seq.block_ids) == 3
    assert bm.allocate_slots(seq, 4)
    assert len(seq.block_ids) == 4


def test_allocate_is_atomic_when_blocks_run_out():
    bm = BlockManager(num_blocks=2, block_size=BLOCK_SIZE)
    seq = Sequence(list(range(12)))
    assert not bm.allocate_slots(seq, 12)
    assert seq.block_ids == [] and seq.num_computed_tokens == 0
    assert bm.num_free_blocks == 2


def test_free_returns_every_block():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    seqs = [computed(bm, [i] * 10) for i in range(2)]
    for seq in seqs:
        bm.free(seq)
        assert seq.block_ids == []
    assert bm.num_free_blocks == 8
    assert all(block.ref_count == 0 for block in bm.blocks)


def test_computed_full_blocks_are_shared_by_a_later_request():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    first = computed(bm, list(range(10)))
    second = Sequence(list(range(10)) + [99])
    prefix_block_ids, num_cached_tokens = bm.get_computed_prefix(second)
    assert prefix_block_ids == first.block_ids[:2] and num_cached_tokens == 8
    assert bm.allocate_slots(second, second.num_tokens - 8, prefix_block_ids)
    assert second.block_ids[:2] == first.block_ids[:2]
    assert second.num_computed_tokens == second.num_cached_tokens == 8
    assert [bm.blocks[b].ref_count for b in first.block_ids[:2]] == [2, 2]


def test_get_computed_prefix_has_no_side_effects():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    bm.free(computed(bm, list(range(10))))
    seq = Sequence(list(range(10)))
    assert bm.get_computed_prefix(seq) == bm.get_computed_prefix(seq)
    assert bm.num_free_blocks == 8 and seq.block_ids == [] and seq.num_computed_tokens == 0
    assert bm.prefix_cache_queried_tokens == 10  # only the first sequence's admission counted


def test_blocks_are_not_cached_before_their_step_ran():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    first = Sequence(list(range(10)))
    assert bm.allocate_slots(first, 10)
    assert bm.get_computed_prefix(Sequence(list(range(10)))) == ([], 0)


def test_partial_block_is_never_cached():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    computed(bm, list(range(6)))
    assert bm.get_computed_prefix(Sequence(list(range(6)) + [0, 0, 1]))[1] == 4


def test_last_token_is_never_served_from_the_cache():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    computed(bm, list(range(8)))
    assert bm.get_computed_prefix(Sequence(list(range(8))))[1] == 4
    assert bm.get_computed_prefix(Sequence(list(range(9))))[1] == 8


def test_prefix_hit_requires_matching_tokens_not_just_hash(monkeypatch):
    monkeypatch.setattr(block_manager_module, "hash_block", lambda parent_hash, token_ids: b"collision")
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    computed(bm, [1, 2, 3, 4, 5])
    assert bm.get_computed_prefix(Sequence([9, 9, 9, 9, 5])) == ([], 0)
    assert bm.get_computed_prefix(Sequence([1, 2, 3, 4, 5]))[1] == 4


def test_prefix_hit_requires_the_same_preceding_blocks():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    computed(bm, [1, 2, 3, 4, 5, 6, 7, 8, 0])
    assert bm.get_computed_prefix(Sequence([9, 9, 9, 9, 5, 6, 7, 8, 0])) == ([], 0)


def test_freed_cached_block_is_revived_by_the_same_prefix():
    bm = BlockManager(num_blocks=4, block_size=BLOCK_SIZE)
    first = computed(bm, list(range(9)))
    cached_block_ids = first.block_ids[:2]
    bm.free(first)
    assert bm.num_free_blocks == 4
    second = computed(bm, list(range(9)))
    assert second.block_ids[:2] == cached_block_ids
    assert second.num_cached_tokens == 8
    assert bm.num_free_blocks == 1


def test_uncached_free_blocks_are_handed_out_before_cached_ones():
    bm = BlockManager(num_blocks=3, block_size=BLOCK_SIZE)
    cached = computed(bm, [1] * 5)  # one cached block, one partial
    partial = computed(bm, [2] * 3)
    bm.free(cached)
    bm.free(partial)  # freed last, yet handed out first
    assert bm.allocate_slots(Sequence([3] * 8), 8)
    assert bm.get_computed_prefix(Sequence([1] * 5))[1] == 4


def test_freed_cached_blocks_are_reused_lru():
    bm = BlockManager(num_blocks=4, block_size=BLOCK_SIZE)
    older, newer = computed(bm, [1] * 5), computed(bm, [2] * 5)
    bm.free(older)
    bm.free(newer)
    assert bm.allocate_slots(Sequence([3] * 12), 12)  # 2 uncached blocks + 1 evicted
    assert bm.get_computed_prefix(Sequence([1] * 5)) == ([], 0)
    assert bm.get_computed_prefix(Sequence([2] * 5))[1] == 4


def test_free_evicts_tail_blocks_before_head_blocks():
    bm = BlockManager(num_blocks=3, block_size=BLOCK_SIZE)
    bm.free(computed(bm, list(range(9))))
    assert bm.allocate_slots(Sequence([7] * 8), 8)  # the uncached block + one evicted
    assert bm.get_computed_prefix(Sequence(list(range(9))))[1] == 4


def test_allocate_counts_revived_prefix_blocks_against_the_free_pool():
    bm = BlockManager(num_blocks=3, block_size=BLOCK_SIZE)
    bm.free(computed(bm, list(range(9))))
    seq = Sequence(list(range(16)) + [0])
    prefix_block_ids, num_cached_tokens = bm.get_computed_prefix(seq)
    assert num_cached_tokens == 8
    assert not bm.allocate_slots(seq, seq.num_tokens - num_cached_tokens, prefix_block_ids)  # 2 + 3 > 3
    assert seq.block_ids == [] and seq.num_computed_tokens == 0 and bm.num_free_blocks == 3
    assert all(block.ref_count == 0 for block in bm.blocks)


def test_block_computed_twice_keeps_the_first_cache_entry():
    bm = BlockManager(num_blocks=4, block_size=BLOCK_SIZE)
    first, second = Sequence(list(range(5))), Sequence(list(range(5)))
    for seq in (first, second):  # admitted in the same step: neither hits
        assert bm.allocate_slots(seq, 5)
        seq.num_computed_tokens = 5
    for seq in (first, second):
        bm.cache_full_blocks(seq)
    assert bm.get_computed_prefix(Sequence(list(range(5)))) == ([first.block_ids[0]], 4)
    assert bm.blocks[second.block_ids[0]].hash is None
    bm.free(first)
    bm.free(second)
    assert bm.num_free_blocks == 4


def test_allocate_with_a_prefix_rejects_a_sequence_that_holds_blocks():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    cached = computed(bm, list(range(9)))
    seq = Sequence(list(range(9)))
    assert bm.allocate_slots(seq, 1)
    with pytest.raises(ValueError, match="only taken on admission"):
        bm.allocate_slots(seq, 1, cached.block_ids[:1])


def test_disabled_prefix_caching_never_hits():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE, enable_prefix_caching=False)
    computed(bm, list(range(9)))
    assert bm.get_computed_prefix(Sequence(list(range(9)))) == ([], 0)
    assert bm.prefix_cache_queried_tokens == 0


def test_prompt_embeds_bypass_the_prefix_cache():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    computed(bm, list(range(9)))
    assert bm.get_computed_prefix(Sequence(list(range(9)), prompt_embeds=object())) == ([], 0)
    with_image = Sequence(list(range(20, 29)), prompt_embeds=object())
    assert bm.allocate_slots(with_image, 9)
    with_image.num_computed_tokens = 9
    bm.cache_full_blocks(with_image)
    assert bm.get_computed_prefix(Sequence(list(range(20, 29)))) == ([], 0)


def test_prefix_cache_counters_count_admissions():
    bm = BlockManager(num_blocks=8, block_size=BLOCK_SIZE)
    computed(bm, list(range(9)))
    computed(bm, list(range(9)))
    assert bm.prefix_cache_queried_tokens == 18
    assert bm.prefix_cache_hit_tokens == 8


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["admit", "grow", "free"]), st.integers(0, 5),
                          st.lists(st.integers(0, 1), min_size=1, max_size=14)), max_size=40))
def test_random_operations_keep_ref_counts_and_free_blocks_consistent(operations):
    bm = BlockManager(num_blocks=6, block_size=2)
    live: list[Sequence] = []
    for kind, pick, token_ids in operations:
        if kind == "admit":
            seq = Sequence(token_ids)
            prefix_block_ids, num_cached_tokens = bm.get_computed_prefix(seq)
            if bm.allocate_slots(seq, seq.num_tokens - num_cached_tokens, prefix_block_ids):
                seq.num_computed_tokens = seq.num_tokens
                bm.cache_full_blocks(seq)
                live.append(seq)
        elif kind == "grow" and live:
            seq = live[pick % len(live)]
            seq.append_token(token_ids[0])
            if bm.allocate_slots(seq, 1):
                seq.num_computed_tokens += 1
                bm.cache_full_blocks(seq)
            else:
                seq.token_ids.pop()
        elif kind == "free" and live:
            bm.free(live.pop(pick % len(live)))

        held = [b for seq in live for b in seq.block_ids]
        for block in bm.blocks:
            assert block.ref_count == held.count(block.block_id)
        assert bm.num_free_blocks + len(set(held)) == bm.num_blocks
        for seq in live:
            assert len(seq.block_ids) == bm.num_blocks_for(seq.num_computed_tokens)
            for i, block_id in enumerate(seq.block_ids):
                block = bm.blocks[block_id]
                if block.hash is not None:  # shared or not, a cached block holds this sequence's tokens
                    assert block.token_ids == tuple(seq.token_ids[i * 2:(i + 1) * 2])
                else:
                    assert block.ref_count == 1
    for seq in live:
        bm.free(seq)
    assert bm.num_free_blocks == bm.num_blocks
