import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lite.config import SchedulerConfig
from lite.engine.block_manager import BlockManager
from lite.engine.scheduler import ScheduledBatch, Scheduler
from lite.engine.sequence import UNRESOLVED, FinishReason, SamplingParams, Sequence, SequenceStatus


def make_scheduler(num_blocks: int = 16, block_size: int = 4, max_num_seqs: int = 8, budget: int = 64,
                   chunked: bool = True, prefix_caching: bool = True) -> Scheduler:
    max_model_len = 64 if chunked else min(budget, 64)  # without chunking a prompt must fit the budget
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                             max_model_len=max_model_len, enable_chunked_prefill=chunked)
    return Scheduler(config, BlockManager(num_blocks, block_size, prefix_caching))


def add(scheduler: Scheduler, token_ids: list[int], request_id: str = "") -> Sequence:
    seq = Sequence(token_ids, request_id=request_id)
    scheduler.add(seq)
    return seq


def sample(batch: ScheduledBatch, token_id: int = 0) -> list[int | None]:
    """What the runner returns: a token for each sequence whose computed tokens reach its end."""
    return [token_id if seq.num_computed_tokens + n == seq.num_tokens else None
            for seq, n in zip(batch.seqs, batch.num_new_tokens)]


def update(scheduler: Scheduler, batch: ScheduledBatch, sampled: list[int | None]) -> None:
    """A step launched and its tokens read back at once, as without async scheduling."""
    scheduler.advance(batch, [token_id is not None for token_id in sampled])
    scheduler.resolve(batch, sampled)


def step(scheduler: Scheduler) -> ScheduledBatch:
    batch = scheduler.schedule()
    update(scheduler, batch, sample(batch))
    return batch


def test_running_sequences_are_scheduled_before_waiting_ones():
    scheduler = make_scheduler()
    first = add(scheduler, [1] * 5)
    step(scheduler)
    second = add(scheduler, [2] * 5)
    batch = scheduler.schedule()
    assert batch.seqs == [first, second] and batch.num_new_tokens == [1, 5]


def test_chunked_prefill_respects_token_budget():
    scheduler = make_scheduler(budget=8)
    seq = add(scheduler, list(range(20)))
    chunks = []
    for _ in range(3):
        batch = step(scheduler)
        chunks.append(batch.num_new_tokens)
        assert batch.num_tokens <= 8
    assert chunks == [[8], [8], [4]]
    assert seq.num_computed_tokens == 20 and seq.num_output_tokens == 1


def test_chunked_prefill_shares_the_budget_with_decodes():
    scheduler = make_scheduler(budget=8)
    decoding = add(scheduler, [1] * 3)
    step(scheduler)
    prefilling = add(scheduler, [2] * 20)
    batch = scheduler.schedule()
    assert batch.seqs == [decoding, prefilling] and batch.num_new_tokens == [1, 7]


def test_without_chunked_prefill_a_prompt_is_scheduled_only_whole():
    scheduler = make_scheduler(budget=16, chunked=False)
    decoding = add(scheduler, [1] * 3)
    step(scheduler)
    whole = add(scheduler, [2] * 16)
    assert step(scheduler).seqs == [decoding]  # 15 tokens of budget left: the prompt waits
    scheduler.finish(decoding, FinishReason.STOP)
    batch = step(scheduler)
    assert batch.seqs == [whole] and batch.num_new_tokens == [16]


def test_waiting_admission_is_fifo_without_skipping_ahead():
    scheduler = make_scheduler(num_blocks=4)
    running = add(scheduler, [1] * 10)  # 3 blocks
    step(scheduler)
    head = add(scheduler, [2] * 8)  # needs 2 blocks, 1 is free
    behind = add(scheduler, [3] * 2)  # would fit, but must not overtake
    assert scheduler.schedule().seqs == [running]
    assert list(scheduler.waiting) == [head, behind]


def test_max_num_seqs_limits_running_sequences():
    scheduler = make_scheduler(max_num_seqs=2)
    for i in range(3):
        add(scheduler, [i] * 4)
    assert len(scheduler.schedule().seqs) == 2
    assert scheduler.num_running == 2 and scheduler.num_waiting == 1


def run_prompts_into_a_full_cache(scheduler: Scheduler, prompts: list[list[int]]) -> list[Sequence]:
    """Prefill then decode once: every 7-token prompt then holds 2 full blocks and needs a third."""
    seqs = [add(scheduler, prompt) for prompt in prompts]
    step(scheduler)
    step(scheduler)
    assert all(seq.num_tokens == 9 and seq.num_computed_tokens == 8 for seq in seqs)
    return seqs


def test_preemption_requeues_at_front_and_resets_progress():
    scheduler = make_scheduler(num_blocks=4)
    first, second = run_prompts_into_a_full_cache(scheduler, [[1] * 7, [2] * 7])
    waiting = add(scheduler, [3] * 3)
    batch = scheduler.schedule()
    assert batch.seqs == [first] and batch.preempted == [second]
    assert second.status is SequenceStatus.WAITING
    assert second.num_computed_tokens == 0 and second.block_ids == []
    assert list(scheduler.waiting) == [second, waiting]  # no admission in a step that preempted
    assert second.num_preemptions == 1 and scheduler.num_preemptions == 1


def test_no_admission_in_a_step_that_preempted():
    scheduler = make_scheduler(num_blocks=4, budget=5, prefix_caching=False)
    first = add(scheduler, [1] * 7)
    step(scheduler)
    second = add(scheduler, [2] * 7)
    step(scheduler)
    step(scheduler)  # first decodes 9 tokens, second holds the last free block
    batch = scheduler.schedule()
    # second's next 4-token chunk would fit in the block first left over, but not this step
    assert batch.seqs == [first] and batch.preempted == [second]
    assert scheduler.block_manager.num_free_blocks == 1


def test_preemption_picks_the_most_recently_admitted_sequence():
    scheduler = make_scheduler(num_blocks=6)
    first, second, third = run_prompts_into_a_full_cache(scheduler, [[1] * 7, [2] * 7, [3] * 7])
    batch = scheduler.schedule()
    assert batch.seqs == [first, second] and batch.preempted == [third]


def test_last_sequence_preempts_itself_rather_than_a_scheduled_one():
    scheduler = make_scheduler(num_blocks=5)
    first, second = run_prompts_into_a_full_cache(scheduler, [[1] * 7, [2] * 7])
    batch = scheduler.schedule()  # first takes the free block; second finds none left
    assert batch.seqs == [first] and batch.preempted == [second]
    assert scheduler.running == [first]


def test_preempted_sequence_resumes_from_its_cached_prefix():
    scheduler = make_scheduler(num_blocks=5)
    first, second = run_prompts_into_a_full_cache(scheduler, [[1] * 7, [2] * 7])
    step(scheduler)
    scheduler.finish(first, FinishReason.STOP)
    batch = scheduler.schedule()
    assert batch.seqs == [second] and batch.num_new_tokens == [1]
    assert second.num_cached_tokens == 8


def test_lone_sequence_that_outgrows_the_cache_raises():
    scheduler = make_scheduler(num_blocks=2)
    add(scheduler, [1] * 7)
    step(scheduler)
    step(scheduler)
    with pytest.raises(RuntimeError, match="more KV blocks than the cache holds"):
        scheduler.schedule()


def test_waiting_sequence_larger_than_the_cache_raises():
    scheduler = make_scheduler(num_blocks=2)
    add(scheduler, [1] * 12)
    with pytest.raises(RuntimeError, match="more KV blocks than the cache holds"):
        scheduler.schedule()


def test_add_rejects_a_prompt_longer_than_max_model_len():
    with pytest.raises(ValueError, match="max_model_len"):
        add(make_scheduler(), [1] * 65)


def test_prefix_cache_hit_skips_cached_tokens_on_admission():
    scheduler = make_scheduler()
    add(scheduler, list(range(10)))
    step(scheduler)
    seq = add(scheduler, list(range(10)) + [42])
    batch = scheduler.schedule()
    assert batch.num_new_tokens[-1] == 3
    assert seq.num_cached_tokens == seq.num_computed_tokens == 8


def test_update_advances_progress_and_appends_the_sampled_token():
    scheduler = make_scheduler(budget=4)
    seq = add(scheduler, [1] * 6)
    update(scheduler, scheduler.schedule(), [None])
    assert seq.num_computed_tokens == 4 and seq.num_tokens == 6
    update(scheduler, scheduler.schedule(), [9])
    assert seq.num_computed_tokens == 6 and seq.output_token_ids == [9]


def test_update_rejects_a_token_sampled_mid_prefill():
    scheduler = make_scheduler(budget=4)
    add(scheduler, [1] * 6)
    with pytest.raises(ValueError, match="before its prompt was computed"):
        update(scheduler, scheduler.schedule(), [9])


def test_update_skips_a_sequence_aborted_during_the_step():
    scheduler = make_scheduler()
    seq = add(scheduler, [1] * 6, request_id="gone")
    batch = scheduler.schedule()
    scheduler.abort("gone")
    update(scheduler, batch, [9])
    assert seq.num_tokens == 6 and seq.block_ids == []


def launch(scheduler: Scheduler) -> ScheduledBatch:
    """Schedule and launch a step, leaving its draws in flight (async scheduling)."""
    batch = scheduler.schedule()
    scheduler.advance(batch, [token_id is not None for token_id in sample(batch)])
    return batch


def test_a_launched_draw_holds_an_unresolved_token_until_resolved():
    scheduler = make_scheduler()
    seq = add(scheduler, [1] * 6)
    batch = launch(scheduler)
    assert seq.num_computed_tokens == 6 and seq.token_ids[6:] == [UNRESOLVED]
    scheduler.resolve(batch, [9])
    assert seq.output_token_ids == [9]


def test_the_next_step_is_scheduled_while_a_draw_is_in_flight():
    scheduler = make_scheduler()
    seq = add(scheduler, [1] * 6)
    first = launch(scheduler)
    second = launch(scheduler)  # decodes the unresolved token
    assert second.seqs == [seq] and second.num_new_tokens == [1]
    assert seq.token_ids[6:] == [UNRESOLVED, UNRESOLVED]
    scheduler.resolve(first, [9])
    scheduler.resolve(second, [8])
    assert seq.output_token_ids == [9, 8] and seq.num_computed_tokens == 7


def test_a_sequence_whose_last_token_is_in_flight_is_not_scheduled_again():
    scheduler = make_scheduler()
    seq = Sequence([1] * 6, SamplingParams(max_tokens=1))
    scheduler.add(seq)
    launch(scheduler)
    assert scheduler.schedule().is_empty


def test_a_block_ending_in_an_unresolved_token_is_cached_only_once_resolved():
    scheduler = make_scheduler(block_size=4)
    seq = add(scheduler, [1] * 3)
    first = launch(scheduler)  # draws token 3, the first block's last
    launch(scheduler)  # computes token 3 before the host knows it
    probe = Sequence([1, 1, 1, 7, 0])
    scheduler.block_manager.cache_full_blocks(seq)
    assert scheduler.block_manager.get_computed_prefix(probe)[1] == 0
    scheduler.resolve(first, [7])
    assert scheduler.block_manager.get_computed_prefix(probe) == (seq.block_ids[:1], 4)


def test_a_sequence_preempted_with_a_draw_in_flight_keeps_the_draw():
    scheduler = make_scheduler(num_blocks=4, prefix_caching=False)
    first, second = add(scheduler, [1] * 8), add(scheduler, [2] * 8)
    in_flight = launch(scheduler)  # both prompts fill their two blocks; both draws in flight
    batch = scheduler.schedule()  # first's draw needs a third block: second goes back to waiting
    assert batch.seqs == [first] and batch.preempted == [second]
    scheduler.advance(batch, [True])
    scheduler.resolve(in_flight, [5, 6])
    assert first.token_ids[8:] == [5, UNRESOLVED]
    assert second.token_ids[8:] == [6] and second.status is SequenceStatus.WAITING


def test_abort_frees_running_and_waiting_sequences():
    scheduler = make_scheduler(max_num_seqs=1)
    running = add(scheduler, [1] * 6, request_id="running")
    waiting = add(scheduler, [2] * 6, request_id="waiting")
    step(scheduler)
    assert scheduler.abort("running") is running and scheduler.abort("waiting") is waiting
    for seq in (running, waiting):
        assert seq.status is SequenceStatus.FINISHED and seq.finish_reason is FinishReason.ABORT
    assert scheduler.abort("unknown") is None
    assert not scheduler.has_unfinished()
    assert scheduler.block_manager.num_free_blocks == 16


def test_finish_removes_the_sequence_and_frees_its_blocks():
    scheduler = make_scheduler()
    seq = add(scheduler, [1] * 6)
    step(scheduler)
    scheduler.finish(seq, FinishReason.LENGTH)
    assert seq.is_finished and seq.finish_reason is FinishReason.LENGTH
    assert scheduler.num_running == 0 and scheduler.block_manager.num_free_blocks == 16


def test_all_blocks_free_after_all_sequences_finish_or_abort():
    scheduler = make_scheduler(num_blocks=8, budget=8)
    seqs = [add(scheduler, [i % 2] * (5 + i), request_id=str(i)) for i in range(6)]
    for _ in range(6):
        step(scheduler)
    for seq in seqs[::2]:
        scheduler.abort(seq.request_id)
    while scheduler.has_unfinished():
        batch = step(scheduler)
        for seq in batch.seqs:
            if seq.num_output_tokens >= 3:
                scheduler.finish(seq, FinishReason.LENGTH)
    assert scheduler.block_manager.num_free_blocks == 8


MAX_MODEL_LEN = 16


class SchedulerMachine(RuleBasedStateMachine):
    """Random add / step / finish / abort on a tiny cache, with a fake KV store.

    The fake store writes, for each computed position, the whole token prefix up to it (what
    real KV depends on); every read checks it back, so a wrongly shared or overwritten block
    shows up wherever a sequence later reads it.
    """

    @initialize(chunked=st.booleans(), prefix_caching=st.booleans(), block_size=st.sampled_from([1, 2, 4]),
                extra_blocks=st.integers(0, 2), max_num_seqs=st.integers(1, 4), budget=st.integers(1, 20))
    def setup(self, chunked, prefix_caching, block_size, extra_blocks, max_num_seqs, budget):
        budget = budget if chunked else max(budget, MAX_MODEL_LEN)
        self.config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                                      max_model_len=MAX_MODEL_LEN, enable_chunked_prefill=chunked)
        # The engine's sizing rule: the cache holds at least one sequence of max_model_len.
        num_blocks = MAX_MODEL_LEN // block_size + extra_blocks
        self.scheduler = Scheduler(self.config, BlockManager(num_blocks, block_size, prefix_caching))
        self.block_manager = self.scheduler.block_manager
        self.kv: dict[int, tuple[int, ...]] = {}
        self.seqs: list[Sequence] = []

    @rule(token_ids=st.lists(st.integers(0, 1), min_size=1, max_size=12), max_tokens=st.integers(1, 6))
    def add(self, token_ids, max_tokens):
        seq = Sequence(token_ids, SamplingParams(max_tokens=max_tokens))
        self.scheduler.add(seq)
        self.seqs.append(seq)

    @rule(token_id=st.integers(0, 2))
    def step(self, token_id):
        batch = self.scheduler.schedule()
        assert batch.num_tokens <= self.config.max_num_batched_tokens
        assert len(batch.seqs) <= self.config.max_num_seqs
        assert len(set(map(id, batch.seqs))) == len(batch.seqs)
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            assert 1 <= n <= seq.num_uncomputed_tokens
            assert self.config.enable_chunked_prefill or n == seq.num_uncomputed_tokens
            assert len(seq.block_ids) * self.block_manager.block_size >= seq.num_computed_tokens + n
            for pos in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
                self.kv[self.slot(seq, pos)] = tuple(seq.token_ids[:pos + 1])
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            for pos in range(seq.num_computed_tokens + n):
                assert self.kv[self.slot(seq, pos)] == tuple(seq.token_ids[:pos + 1])
        update(self.scheduler, batch, sample(batch, token_id))
        for seq in batch.seqs:  # the engine's stop checks
            if seq.num_output_tokens >= seq.sampling_params.max_tokens or seq.num_tokens >= MAX_MODEL_LEN:
                self.scheduler.finish(seq, FinishReason.LENGTH)

    @rule(pick=st.integers(0, 10))
    def finish(self, pick):
        running = self.scheduler.running
        if running:
            self.scheduler.finish(running[pick % len(running)], FinishReason.STOP)

    @rule(pick=st.integers(0, 20))
    def abort(self, pick):
        request_id = self.seqs[pick].request_id if pick < len(self.seqs) else "unknown"
        self.scheduler.abort(request_id)

    def slot(self, seq: Sequence, pos: int) -> int:
        block_size = self.block_manager.block_size
        return seq.block_ids[pos // block_size] * block_size + pos % block_size

    @invariant()
    def blocks_are_owned_consistently(self):
        block_size = self.block_manager.block_size
        holders: dict[int, int] = {}
        for seq in self.seqs:
            if seq.status is not SequenceStatus.RUNNING:
                assert seq.block_ids == [] and (seq.is_finished or seq.num_computed_tokens == 0)
                continue
            assert len(seq.block_ids) * block_size >= seq.num_computed_tokens
            assert len(set(seq.block_ids)) == len(seq.block_ids)
            for i, block_id in enumerate(seq.block_ids):
                holders[block_id] = holders.get(block_id, 0) + 1
                block = self.block_manager.blocks[block_id]
                if block.hash is not None:
                    assert block.token_ids == tuple(seq.token_ids[i * block_size:(i + 1) * block_size])
        for block in self.block_manager.blocks:
            assert block.ref_count == holders.get(block.block_id, 0)
            assert block.ref_count <= 1 or block.hash is not None  # only cached prefix blocks are shared
        assert self.block_manager.num_free_blocks + len(holders) == self.block_manager.num_blocks

    @invariant()
    def queues_match_statuses(self):
        assert self.scheduler.num_running <= self.config.max_num_seqs
        assert all(seq.status is SequenceStatus.RUNNING for seq in self.scheduler.running)
        assert all(seq.status is SequenceStatus.WAITING for seq in self.scheduler.waiting)
        unfinished = sum(not seq.is_finished for seq in self.seqs)
        assert unfinished == self.scheduler.num_running + self.scheduler.num_waiting

    def teardown(self):
        if not hasattr(self, "scheduler"):
            return
        for _ in range(1000):
            if not self.scheduler.has_unfinished():
                break
            self.step(token_id=1)
            self.blocks_are_owned_consistently()
        assert not self.scheduler.has_unfinished()
        assert self.block_manager.num_free_blocks == self.block_manager.num_blocks


SchedulerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_scheduler_invariants_hold_under_random_operations = SchedulerMachine.TestCase
