"""Async scheduling: each step is launched before the previous step's tokens reach the host.

On the CPU a forward pass blocks, so nothing overlaps here, but the bookkeeping is the one CUDA
runs: tokens still on the device, steps launched with them, stops noticed a step late. Every
test compares with the same engine settings scheduled synchronously.
"""
import pytest

from conftest import assert_same_greedy_tokens, make_engine
from lite.engine.sequence import UNRESOLVED, SamplingParams

PROMPTS = [
    "Write a haiku about the sea.",
    "Explain how a rainbow forms, step by step.",
    "List five uses of a paperclip.",
    "What is 12 times 12?",
]
GREEDY = SamplingParams(temperature=0, max_tokens=40, logprobs=2)


def both(folder, **options):
    return (make_engine(folder, async_scheduling=False, **options),
            make_engine(folder, async_scheduling=True, **options))


@pytest.fixture(scope="module")
def engines(smollm2_dir):
    return both(smollm2_dir)


@pytest.fixture(scope="module")
def chats(engines):
    tokenizer = engines[0].tokenizer
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in PROMPTS]


def test_cpu_engines_schedule_synchronously_by_default(smollm2_engine):
    assert smollm2_engine.async_scheduling is False


def test_a_token_reaches_the_host_one_step_after_its_step_is_launched(engines, chats):
    engine = engines[1]
    request_id = engine.add_request(chats[0], SamplingParams(temperature=0, max_tokens=3))
    assert engine.step() == []  # the prefill is launched; its token is still "on the device"
    seq = engine.requests[request_id].seq
    assert seq.token_ids[-1] == UNRESOLVED
    first = engine.step()  # launches the first decode, then reads the prefill's token
    assert [len(o.token_ids) for o in first] == [1] and seq.token_ids[-2] == first[0].token_ids[0]
    while engine.has_unfinished():
        engine.step()
    assert engine.block_manager.num_free_blocks == engine.num_kv_blocks


def test_greedy_batch_gives_the_tokens_of_synchronous_scheduling(engines, chats):
    sync, overlapped = (engine.generate(chats, GREEDY) for engine in engines)
    assert_same_greedy_tokens(overlapped, sync)
    assert [o.finish_reason for o in overlapped] == [o.finish_reason for o in sync]
    assert [o.text for o in overlapped] == [o.text for o in sync]


def test_seeded_sampling_gives_the_tokens_of_synchronous_scheduling(engines, chats):
    params = [SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=i, max_tokens=24) for i in range(4)]
    sync, overlapped = (engine.generate(chats, params) for engine in engines)
    assert [o.token_ids for o in overlapped] == [o.token_ids for o in sync]


def test_stop_string_found_a_step_late_still_cuts_the_same_text(engines, chats):
    params = SamplingParams(temperature=0, max_tokens=60, stop=("ing",))
    sync, overlapped = (engine.generate(chats, params) for engine in engines)
    assert [(o.text, o.token_ids, o.stop_reason) for o in overlapped] == \
        [(o.text, o.token_ids, o.stop_reason) for o in sync]
    assert any(o.stop_reason == "ing" for o in sync)
    assert engines[1].block_manager.num_free_blocks == engines[1].num_kv_blocks


def test_the_last_token_of_max_tokens_costs_no_extra_step(engines, chats):
    params = SamplingParams(temperature=0, max_tokens=7, ignore_eos=True)
    computed = []
    for engine in engines:
        before = engine.total_computed_tokens
        outputs = engine.generate(chats, params)
        assert all(len(o.token_ids) == 7 for o in outputs)
        computed.append(engine.total_computed_tokens - before)
    assert computed[0] == computed[1]


def test_penalties_wait_for_the_previous_token(engines, chats):
    params = SamplingParams(temperature=0, max_tokens=30, repetition_penalty=1.3, frequency_penalty=0.5)
    sync, overlapped = (engine.generate(chats[:2], params) for engine in engines)
    assert [o.token_ids for o in overlapped] == [o.token_ids for o in sync]


def test_grammar_processor_sees_every_earlier_token(engines, chats):
    seen = []

    def processor(output_token_ids, logits):
        seen.append(list(output_token_ids))

    engine = engines[1]
    seq = engine.build_sequence(chats[0], SamplingParams(temperature=0, max_tokens=6), logits_processor=processor)
    engine.add_sequence(seq)
    while engine.has_unfinished():
        engine.step()
    assert all(UNRESOLVED not in tokens for tokens in seen)
    assert [len(tokens) for tokens in seen] == list(range(6))


def test_abort_while_a_step_is_in_flight_frees_every_block(engines, chats):
    engine = engines[1]
    ids = [engine.add_request(c, SamplingParams(temperature=0, max_tokens=100)) for c in chats]
    for _ in range(3):
        engine.step()
    assert engine.in_flight
    engine.abort(ids[0])
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    assert ids[0] not in {o.request_id for o in outputs}
    assert engine.block_manager.num_free_blocks == engine.num_kv_blocks


def test_preemption_with_a_token_in_flight_gives_the_tokens_of_synchronous_scheduling(smollm2_dir, chats):
    # Float32 K and V of 320 tokens (30 layers, 3 KV heads of 64): room for about two of the four
    # sequences at full length, so the rest wait or are preempted.
    engines = both(smollm2_dir, max_model_len=256, block_size=16, kv_cache_memory=2 * 30 * 3 * 64 * 4 * 320)
    params = SamplingParams(temperature=0, max_tokens=120, ignore_eos=True, logprobs=2)
    sync, overlapped = (engine.generate(chats, params) for engine in engines)
    assert engines[1].scheduler.num_preemptions > 0
    assert_same_greedy_tokens(overlapped, sync)
    assert engines[1].block_manager.num_free_blocks == engines[1].num_kv_blocks


def test_prefix_cache_hits_under_async_scheduling(engines, chats):
    engine = engines[1]
    first = engine.generate([chats[1]], GREEDY)[0]
    again = engine.generate([chats[1]], GREEDY)[0]
    assert again.num_cached_tokens > 0 and again.token_ids == first.token_ids
