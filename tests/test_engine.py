"""The engine on the real SmolLM2-135M-Instruct weights, against Hugging Face transformers."""
import pytest
import torch
import transformers

from conftest import assert_same_greedy_tokens, make_engine
from lite.config import ModelConfig
from lite.engine.sequence import SamplingParams

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms, step by step.",
    "List five uses of a paperclip.",
    "What is the difference between a list and a tuple in Python?",
    "Describe the city of Paris to someone who has never been there.",
]
NEW_TOKENS = 64
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, logprobs=2)
def kv_bytes_for_tokens(folder, tokens):
    cfg = ModelConfig.from_folder(folder)
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 * tokens  # fp32


@pytest.fixture(scope="module")
def engine(smollm2_engine):
    return smollm2_engine


@pytest.fixture(scope="module")
def chats(engine):
    return [engine.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in PROMPTS]


@pytest.fixture(scope="module")
def alone(engine, chats):
    """Each prompt run on its own: the reference for batching, chunking and caching tests."""
    return [engine.generate([c], GREEDY)[0] for c in chats]


@pytest.fixture(scope="module")
def greedy_alone(alone):
    return [output.token_ids for output in alone]


def test_greedy_matches_transformers_token_for_token(smollm2_dir, chats, greedy_alone):
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    eos = set(hf.generation_config.eos_token_id if isinstance(hf.generation_config.eos_token_id, list)
              else [hf.generation_config.eos_token_id])
    for chat, ours in zip(chats, greedy_alone):
        out = hf.generate(torch.tensor([chat]), max_new_tokens=NEW_TOKENS, do_sample=False)
        theirs = out[0, len(chat):].tolist()
        cut = next((i + 1 for i, t in enumerate(theirs) if t in eos), len(theirs))
        assert ours == theirs[:cut]
    assert sum(len(t) for t in greedy_alone) >= 4 * NEW_TOKENS  # most answers run the full length


def test_batch_of_mixed_lengths_matches_each_prompt_alone(engine, chats, alone):
    assert_same_greedy_tokens(engine.generate(chats, GREEDY), alone)


def test_chunked_prefill_matches_unchunked(smollm2_dir, chats, alone):
    chunked = make_engine(smollm2_dir, max_num_batched_tokens=16, enable_prefix_caching=False)
    assert_same_greedy_tokens(chunked.generate(chats, GREEDY), alone)


def test_prefix_cache_hit_gives_same_tokens_with_fewer_prefilled(smollm2_dir, chats, alone):
    cached = make_engine(smollm2_dir, block_size=16)
    cached.generate([chats[0]], GREEDY)
    before = cached.total_computed_tokens
    again = cached.generate([chats[0]], GREEDY)[0]
    assert_same_greedy_tokens([again], alone[:1])
    full_blocks = (len(chats[0]) - 1) // 16
    assert again.num_cached_tokens == full_blocks * 16 > 0
    prefilled = cached.total_computed_tokens - before - (len(again.token_ids) - 1)
    assert prefilled == len(chats[0]) - again.num_cached_tokens


def test_preemption_under_small_kv_budget_still_gives_correct_outputs(smollm2_dir, chats, alone):
    # Room for about two of the five sequences at full length: the rest must wait or be preempted.
    tight = make_engine(smollm2_dir, max_model_len=256, block_size=16,
                        kv_cache_memory=kv_bytes_for_tokens(smollm2_dir, 320))
    outputs = tight.generate(chats, GREEDY)
    assert tight.scheduler.num_preemptions > 0
    assert_same_greedy_tokens(outputs, alone)
    assert tight.block_manager.num_free_blocks == tight.num_kv_blocks


def test_all_blocks_free_after_aborts(engine, chats):
    ids = [engine.add_request(c, SamplingParams(temperature=0, max_tokens=200)) for c in chats]
    for _ in range(3):
        engine.step()
    for request_id in ids:
        engine.abort(request_id)
    assert not engine.has_unfinished()
    assert engine.block_manager.num_free_blocks == engine.num_kv_blocks
