"""The engine on the CUDA backend end to end: against transformers, the CPU backend, and itself.

Models have random weights (no download on the GPU machine) with the output head sharpened x8,
so that greedy decoding is a sharp test rather than a walk through near ties.
"""
from __future__ import annotations

import pytest
import torch
import transformers

pytest.importorskip("triton")
from . import gpu_helpers  # noqa: E402,F401  (skips this module without a GPU)

from lite.config import EngineConfig  # noqa: E402
from lite.engine.dummy import write_numbered_tokenizer  # noqa: E402
from lite.engine.engine import LLMEngine  # noqa: E402
from lite.engine.sequence import SamplingParams  # noqa: E402

pytestmark = pytest.mark.usefixtures("needs_cuda")

PROMPTS = [[5, 17, 300, 42, 9, 1000, 77], list(range(100, 400)), [3, 3, 3], list(range(2000, 2060))]
NEW_TOKENS = 32
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=2)
# How close the reference's two best tokens must be for a run to part ways there. float32: the
# rounding of different but exact kernels (the CPU tests' 1e-3). bfloat16 keeps 8 bits of
# mantissa: logits of size ~10 move by ~0.05 when the same sums are taken in another order.
NEAR_TIE = {torch.float32: 1e-3, torch.bfloat16: 0.15}
SMALL_LLAMA = dict(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024)
# SmolLM2-135M's shape (HuggingFaceTB/SmolLM2-135M-Instruct config.json).
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def random_model_folder(folder, shape: dict):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(bos_token_id=None, eos_token_id=None, **shape)
    config.torch_dtype = "float32"
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(8.0)
    hf.save_pretrained(folder)
    write_numbered_tokenizer(folder, shape["vocab_size"])
    return hf


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-llama")
    return folder, random_model_folder(folder, SMALL_LLAMA)


def engine(folder, **options) -> LLMEngine:
    defaults = dict(backend="cuda", dtype="bfloat16", max_model_len=1024, max_num_seqs=16)
    return LLMEngine(EngineConfig(model=str(folder), **{**defaults, **options}))


def hf_greedy(hf, prompt):
    out = hf.generate(torch.tensor([prompt], device=hf.device), max_new_tokens=NEW_TOKENS,
                      min_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True,
                      output_logits=True, pad_token_id=0)
    logprobs = torch.log_softmax(torch.cat(out.logits).float(), dim=-1)
    return out.sequences[0, len(prompt):].tolist(), logprobs


def count_same_until_near_tie(ours: list[int], theirs: list[int], gaps: list[float], near_tie: float) -> int:
    """Tokens that agree before the runs part; they may part only where the reference's two best
    tokens were within near_tie (gaps[i]: best minus second-best log-probability at step i)."""
    split = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if split is None:
        assert ours == theirs
        return len(ours)
    assert gaps[split] < near_tie, f"diverged at token {split}, where the reference led by {gaps[split]:.3f}"
    return split


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_tokens_match_transformers(small_llama, dtype):
    folder, hf = small_llama
    hf = hf.to("cuda", dtype)
    lite = engine(folder, dtype=str(dtype).removeprefix("torch."))
    outputs = lite.generate(PROMPTS, GREEDY)
    agreed = 0
    for prompt, output in zip(PROMPTS, outputs):
        theirs, logprobs = hf_greedy(hf, prompt)
        top2 = logprobs.topk(2).values
        agreed += count_same_until_near_tie(output.token_ids, theirs, (top2[:, 0] - top2[:, 1]).tolist(),
                                            NEAR_TIE[dtype])
    print(f"{dtype}: {agreed}/{len(PROMPTS) * NEW_TOKENS} greedy tokens identical to transformers")
    assert agreed >= len(PROMPTS) * NEW_TOKENS // 2


def cpu_reference(folder, options: dict):
    cpu = LLMEngine(EngineConfig(model=str(folder), backend="cpu", dtype="float32", max_model_len=1024,
                                 kv_cache_memory=256 << 20, **options))
    return cpu.generate(PROMPTS, GREEDY)


def assert_same_as_cpu(outputs, reference, near_tie: float) -> int:
    agreed = 0
    for ours, theirs in zip(outputs, reference):
        gaps = [entry.top_logprobs[0][1] - entry.top_logprobs[1][1] for entry in theirs.logprobs]
        agreed += count_same_until_near_tie(ours.token_ids, theirs.token_ids, gaps, near_tie)
    return agreed


def test_smollm2_shape_agrees_between_cpu_and_cuda_backends(tmp_path):
    random_model_folder(tmp_path, SMOLLM2)
    reference = cpu_reference(tmp_path, {})
    agreed = assert_same_as_cpu(engine(tmp_path, dtype="float32").generate(PROMPTS, GREEDY), reference,
                                NEAR_TIE[torch.float32])
    assert agreed == len(PROMPTS) * NEW_TOKENS


@pytest.mark.parametrize("kv", ["int8", "int4"])
def test_quantized_kv_cache_matches_the_cpu_backend(small_llama, kv):
    folder, _ = small_llama
    reference = cpu_reference(folder, {"kv_cache_dtype": kv})
    outputs = engine(folder, dtype="float32", kv_cache_dtype=kv).generate(PROMPTS, GREEDY)
    # The CPU backend attends a step's own new tokens at full precision, the CUDA kernels read
    # them back quantized like every other token: the two differ by the quantization noise.
    agreed = assert_same_as_cpu(outputs, reference, 0.1 if kv == "int8" else 0.5)
    mean_logprob = [sum(e.logprob for o in outs for e in o.logprobs) / sum(len(o.logprobs) for o in outs)
                    for outs in (outputs, reference)]
    print(f"KV {kv}: {agreed} tokens agree; mean greedy log-probability cuda {mean_logprob[0]:.4f}, "
          f"cpu {mean_logprob[1]:.4f}")
    assert abs(mean_logprob[0] - mean_logprob[1]) < (0.02 if kv == "int8" else 0.1)


def test_decode_graphs_replay_and_match_eager(small_llama):
    folder, _ = small_llama
    eager = engine(folder, enforce_eager=True).generate(PROMPTS, GREEDY)
    graphs = engine(folder)
    replays = []
    replay = graphs.runner.graph_runner.replay
    graphs.runner.graph_runner.replay = lambda *args: replays.append(1) or replay(*args)
    outputs = graphs.generate(PROMPTS, GREEDY)
    assert len(replays) >= NEW_TOKENS - 1
    assert assert_same_as_cpu(outputs, eager, NEAR_TIE[torch.bfloat16]) >= len(PROMPTS) * NEW_TOKENS // 2


def test_dependent_launches_give_the_tokens_and_logprobs_of_ordinary_launches(small_llama, monkeypatch):
    # A kernel that touched another's memory before its wait would race: outputs would drift.
    from lite.backends.cuda.kernels import pdl
    if not pdl.launch_options(torch.device("cuda"))["USE_PDL"]:
        pytest.skip("programmatic dependent launch needs compute capability 9.0 or newer")
    folder, _ = small_llama
    dependent = engine(folder).generate(PROMPTS, GREEDY)
    monkeypatch.setenv("LITE_PDL", "0")
    pdl._enabled.cache_clear()
    try:
        ordinary = engine(folder).generate(PROMPTS, GREEDY)
    finally:
        pdl._enabled.cache_clear()
    assert [(o.token_ids, o.logprobs) for o in dependent] == [(o.token_ids, o.logprobs) for o in ordinary]


@pytest.mark.parametrize("params", [GREEDY, SamplingParams(temperature=1.0, top_p=0.9, seed=7,
                                                          max_tokens=NEW_TOKENS, ignore_eos=True)],
                         ids=["greedy", "seeded"])
def test_async_scheduling_gives_the_tokens_of_synchronous_scheduling(small_llama, params):
    folder, _ = small_llama
    sync = engine(folder, dtype="float32", async_scheduling=False).generate(PROMPTS, params)
    overlapped = engine(folder, dtype="float32")
    assert overlapped.async_scheduling  # the CUDA default
    # The same batches step for step (no request stops early), so the same kernels and tokens.
    assert [o.token_ids for o in overlapped.generate(PROMPTS, params)] == [o.token_ids for o in sync]
    assert overlapped.block_manager.num_free_blocks == overlapped.num_kv_blocks


def test_chunked_prefill_and_prefix_cache_hits_give_the_same_tokens(small_llama):
    folder, _ = small_llama
    whole = engine(folder, max_num_batched_tokens=1024).generate(PROMPTS, GREEDY)
    chunked = engine(folder, max_num_batched_tokens=64)
    assert assert_same_as_cpu(chunked.generate(PROMPTS, GREEDY), whole, NEAR_TIE[torch.bfloat16]) > 0
    again = chunked.generate([PROMPTS[1]], GREEDY)[0]
    assert again.num_cached_tokens >= 256
    assert assert_same_as_cpu([again], whole[1:2], NEAR_TIE[torch.bfloat16]) > 0


def test_kv_cache_is_sized_from_free_memory_and_says_when_one_sequence_cannot_fit(small_llama):
    folder, _ = small_llama
    sized = engine(folder, max_num_seqs=4096)  # no cap from max_num_seqs: the budget decides
    free, _ = torch.cuda.mem_get_info()
    assert sized.num_kv_blocks > 1024
    assert free > 0
    with pytest.raises(ValueError, match="fewer than one sequence of max_model_len"):
        engine(folder, memory_fraction=0.01)


def test_w4a16_checkpoint_matches_the_cpu_backend(small_llama, tmp_path):
    from lite.quantize.convert import ConvertOptions, convert

    folder, _ = small_llama
    converted = convert(ConvertOptions(source=str(folder), output=tmp_path / "w4a16", method="rtn")).output
    reference = cpu_reference(converted, {})
    outputs = engine(converted, dtype="float16").generate(PROMPTS, GREEDY)
    # Both read the same int4 weights; the CPU backend multiplies in bfloat16 (its int4 kernel's
    # activations), this one in float16: near ties of the bfloat16 kind may part.
    agreed = assert_same_as_cpu(outputs, reference, NEAR_TIE[torch.bfloat16])
    mean_logprob = [sum(e.logprob for o in outs for e in o.logprobs) / sum(len(o.logprobs) for o in outs)
                    for outs in (outputs, reference)]
    print(f"W4A16: {agreed} tokens agree; mean greedy log-probability cuda {mean_logprob[0]:.4f}, "
          f"cpu {mean_logprob[1]:.4f}")
    assert abs(mean_logprob[0] - mean_logprob[1]) < 0.05
