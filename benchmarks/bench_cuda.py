"""The CUDA benchmark: lite beside transformers (eager `generate`) on one GPU, dummy weights.

    python benchmarks/bench_cuda.py --output docs/benchmarks.md

The model is Llama-3-8B's shape with random bf16 weights (`load_format="dummy"`; no download).
Batch-1 decode is reported against the memory-bandwidth limit: the bytes of weights one token
reads, over a device-to-device copy rate measured first in the same run. Each side runs in this
process in turn (transformers first), each freeing the GPU before the next starts.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shlex
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lite.bench import write_section  # noqa: E402
from lite.config import EngineConfig  # noqa: E402
from lite.engine.dummy import LLAMA3_8B, write_dummy_model  # noqa: E402
from lite.engine.engine import LLMEngine  # noqa: E402
from lite.engine.layers.linear import Linear  # noqa: E402
from lite.engine.layers.norm import RMSNorm  # noqa: E402
from lite.engine.layers.w4a16_linear import W4A16Linear  # noqa: E402
from lite.engine.sequence import SamplingParams  # noqa: E402
from lite.quantize.awq_format import awq_quantization_config  # noqa: E402
from lite.bench import _TokenClock  # the same streamer lite bench times transformers with

BATCH_REQUESTS, BATCH_PROMPT, BATCH_NEW = 64, 128, 128
DECODE_PROMPT, DECODE_NEW = 128, 256
PREFILL_TOKENS = 2048
SEQ_TOKENS = 2048  # "concurrent 2k-token sequences"
MIXED_REQUESTS, MIXED_PROMPT, MIXED_NEW = 500, (32, 1024), (32, 256)  # lengths drawn uniformly
HF_MIXED_BATCH = 64


def prompt(vocab: int, n: int, seed: str) -> list[int]:
    rng = random.Random(seed)  # fresh ids per run: the prefix cache must not serve a repeat
    return [rng.randrange(vocab) for _ in range(n)]


def mixed_requests(vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random("mixed-lengths")
    return [(prompt(vocab, rng.randint(*MIXED_PROMPT), f"mixed-{i}"), rng.randint(*MIXED_NEW))
            for i in range(MIXED_REQUESTS)]


def copy_rate(device: torch.device) -> float:
    """Bytes read plus written per second by a large device-to-device copy (median of 20)."""
    src = torch.randn(1 << 30, device=device, dtype=torch.bfloat16)  # 2 GiB, 40x the L2
    dst = torch.empty_like(src)
    times = []
    for _ in range(23):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    return 2 * (2 << 30) / median(times[3:])


def weight_bytes_per_token(model) -> int:
    # Every linear and norm weight is read once per decode step (int4 ones with their scales and
    # zeros); of the embedding one row only.
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, (Linear, RMSNorm, W4A16Linear)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            w = module.weight
            parts = (w.packed, w.scales, w.zeros) if isinstance(module, W4A16Linear) else (w,)
            total += sum(t.numel() * t.element_size() for t in parts)
    return total


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)


def start_engine(folder: Path, args) -> tuple[LLMEngine, float]:
    start = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=str(folder), backend="cuda", dtype="bfloat16", load_format="dummy",
                                    max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                                    max_num_batched_tokens=PREFILL_TOKENS))
    ready = time.perf_counter() - start
    engine.generate([prompt(engine.model_config.vocab_size, 64, "warm")], greedy(8))
    return engine, ready


def decode_seconds_per_token(engine: LLMEngine, seed: str) -> float:
    """One request alone: time between its first and last token over the tokens in between."""
    request_id = engine.add_request(prompt(engine.model_config.vocab_size, DECODE_PROMPT, seed), greedy(DECODE_NEW))
    stamps = []
    while engine.has_unfinished():
        for output in engine.step():
            if output.request_id == request_id:
                stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def release(engine: LLMEngine) -> None:
    del engine
    gc.collect()
    torch.cuda.empty_cache()


def lite_w4a16_side(folder: Path, args) -> dict:
    engine, _ = start_engine(folder, args)
    result = {"weight_bytes": weight_bytes_per_token(engine.model),
              "decode_s": median(decode_seconds_per_token(engine, f"w4a16-{i}") for i in range(3))}
    release(engine)
    return result


def lite_side(folder: Path, args) -> dict:
    engine, ready = start_engine(folder, args)
    vocab = engine.model_config.vocab_size
    result = {"start_to_ready_s": ready, "weight_bytes": weight_bytes_per_token(engine.model)}
    result["decode_s"] = median(decode_seconds_per_token(engine, f"decode-{i}") for i in range(3))
    prefill = []
    for i in range(3):
        t = time.perf_counter()
        engine.generate([prompt(vocab, PREFILL_TOKENS, f"prefill-{i}")], greedy(1))
        prefill.append(PREFILL_TOKENS / (time.perf_counter() - t))
    result["prefill_tok_s"] = median(prefill)
    batch = []
    for i in range(2):
        prompts = [prompt(vocab, BATCH_PROMPT, f"batch-{i}-{j}") for j in range(BATCH_REQUESTS)]
        t = time.perf_counter()
        outputs = engine.generate(prompts, greedy(BATCH_NEW))
        batch.append(sum(len(o.token_ids) for o in outputs) / (time.perf_counter() - t))
    result["batch_tok_s"] = max(batch)
    requests = mixed_requests(vocab)
    t = time.perf_counter()
    outputs = engine.generate([p for p, _ in requests], [greedy(n) for _, n in requests])
    result["mixed_tok_s"] = sum(len(o.token_ids) for o in outputs) / (time.perf_counter() - t)
    # KV capacity: the bytes the cache got, plus what stayed free within memory_fraction
    # (max_num_seqs caps the block count), as whole 2k-token sequences per KV format.
    spec_bytes = {bits: _bytes_per_token(engine, bits) for bits in (None, 8, 4)}
    budget = engine.num_kv_blocks * engine.block_size * spec_bytes[None] + \
        engine.backend.available_kv_memory(0.9)
    result["kv_budget_bytes"] = budget
    result["kv_seqs"] = {name: int(budget // (spec_bytes[bits] * SEQ_TOKENS))
                         for name, bits in (("bf16", None), ("int8", 8), ("int4", 4))}
    result["kv_blocks"] = engine.num_kv_blocks
    release(engine)
    return result


def _bytes_per_token(engine, kv_bits) -> float:
    from lite.backends import KVCacheSpec
    cfg = engine.model_config
    spec = KVCacheSpec(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, engine.block_size, 1,
                       torch.bfloat16, kv_bits)
    return engine.backend.kv_bytes_per_block(spec) / engine.block_size


def hf_side(hf_config: dict) -> dict:
    import transformers

    config = transformers.LlamaConfig(**{k: v for k, v in hf_config.items()
                                         if k not in ("architectures", "torch_dtype")})
    config.eos_token_id = None
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    vocab = config.vocab_size

    def generate(ids: torch.Tensor, new: int, streamer=None, mask=None) -> None:
        mask = torch.ones_like(ids) if mask is None else mask
        with torch.inference_mode():
            out = model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(),
                                 max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                                 streamer=streamer)
        assert out.shape[1] == ids.shape[1] + new

    generate(torch.tensor([prompt(vocab, 64, "warm")]), 8)
    decode = []
    for i in range(2):
        clock = _TokenClock()
        generate(torch.tensor([prompt(vocab, DECODE_PROMPT, f"decode-{i}")]), DECODE_NEW, clock)
        decode.append((clock.times[-1] - clock.times[1]) / (len(clock.times) - 2))  # times[0]: the prompt
    prefill = []
    for i in range(2):
        torch.cuda.synchronize()
        t = time.perf_counter()
        generate(torch.tensor([prompt(vocab, PREFILL_TOKENS, f"prefill-{i}")]), 1)
        prefill.append(PREFILL_TOKENS / (time.perf_counter() - t))
    ids = torch.tensor([prompt(vocab, BATCH_PROMPT, f"batch-{j}") for j in range(BATCH_REQUESTS)])
    t = time.perf_counter()
    generate(ids, BATCH_NEW)
    batch = BATCH_REQUESTS * BATCH_NEW / (time.perf_counter() - t)
    # Mixed lengths: static batches in arrival order, left-padded, each run to its longest output;
    # only the tokens each request asked for count.
    requests = mixed_requests(vocab)
    t = time.perf_counter()
    for first in range(0, len(requests), HF_MIXED_BATCH):
        group = requests[first:first + HF_MIXED_BATCH]
        longest = max(len(p) for p, _ in group)
        ids = torch.zeros((len(group), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (p, _) in enumerate(group):
            ids[row, longest - len(p):], mask[row, longest - len(p):] = torch.tensor(p), 1
        generate(ids, max(n for _, n in group), mask=mask)
    mixed = sum(n for _, n in requests) / (time.perf_counter() - t)
    return {"decode_s": median(decode), "prefill_tok_s": median(prefill), "batch_tok_s": batch, "mixed_tok_s": mixed,
            "transformers": transformers.__version__}


def report(args, device_name: str, rate: float, lite: dict, w4a16: dict, hf: dict | None) -> str:
    limit_s = lite["weight_bytes"] / rate
    w4a16_limit_s = w4a16["weight_bytes"] / rate

    def row(label, ours, theirs, fmt="{:,.1f}", lower_is_better=False):
        cell = "not run" if theirs is None else fmt.format(theirs)
        ratio = "—" if theirs is None else f"{(theirs / ours if lower_is_better else ours / theirs):.2f}x"
        return f"| {label} | {fmt.format(ours)} | {cell} | {ratio} |"

    def hf_value(key):
        return None if hf is None else hf[key]

    lines = [
        f"## Llama-3-8B shape (dummy bf16 weights) on {device_name}", "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- date: {date.today().isoformat()}; torch {torch.__version__}, "
        f"transformers {hf['transformers'] if hf else 'skipped'}, Triton {_triton_version()}",
        f"- device-to-device copy rate: {rate / 1e12:.2f} TB/s (bytes read + written); weights read per "
        f"token: {lite['weight_bytes'] / 1e9:.2f} GB -> bandwidth limit {limit_s * 1e3:.2f} ms/token",
        f"- lite: backend cuda, bf16, CUDA graphs, max_model_len {args.max_model_len}, max_num_seqs "
        f"{args.max_num_seqs}, token budget {PREFILL_TOKENS}; transformers: `generate` in eager mode "
        "(default sdpa attention, dynamic cache, no compile)", "",
        "| benchmark | lite | transformers | lite's advantage |", "| --- | ---: | ---: | ---: |",
        row(f"decode, batch 1: ms/token ({DECODE_PROMPT}-token prompt, {DECODE_NEW} new; lower is better)",
            lite["decode_s"] * 1e3, hf and hf["decode_s"] * 1e3, "{:,.2f}", lower_is_better=True),
        row("decode, batch 1: fraction of the bandwidth limit", limit_s / lite["decode_s"],
            hf and limit_s / hf["decode_s"], "{:.0%}"),
        row("W4A16 (AWQ layout, group 128; lm_head bf16) decode, batch 1: ms/token", w4a16["decode_s"] * 1e3,
            None, "{:,.2f}"),
        row(f"W4A16 decode, batch 1: fraction of its own bandwidth limit ({w4a16['weight_bytes'] / 1e9:.2f} GB "
            f"per token: {w4a16_limit_s * 1e3:.2f} ms)", w4a16_limit_s / w4a16["decode_s"], None, "{:.0%}"),
        row(f"{BATCH_REQUESTS} requests ({BATCH_PROMPT}-token prompts, {BATCH_NEW} new): output tokens/s",
            lite["batch_tok_s"], hf_value("batch_tok_s")),
        row(f"{MIXED_REQUESTS} mixed requests (prompts {MIXED_PROMPT[0]}-{MIXED_PROMPT[1]}, outputs "
            f"{MIXED_NEW[0]}-{MIXED_NEW[1]} tokens): output tokens/s", lite["mixed_tok_s"], hf_value("mixed_tok_s")),
        row(f"prefill, {PREFILL_TOKENS}-token prompt: tokens/s", lite["prefill_tok_s"], hf_value("prefill_tok_s")),
        "",
        f"- engine start to ready (dummy weights, warm-up, KV sizing, graph capture), Triton's kernel "
        f"cache empty: {lite['start_to_ready_s']:.1f} s",
        f"- transformers' mixed run: static batches of {HF_MIXED_BATCH} in arrival order, left-padded, each "
        "run to its longest output; both sides count only the tokens each request asked for",
        f"- KV cache budget at memory_fraction 0.9: {lite['kv_budget_bytes'] / 2**30:.1f} GiB; concurrent "
        f"{SEQ_TOKENS}-token sequences it holds: " + ", ".join(f"{k} KV {v}" for k, v in lite["kv_seqs"].items()),
    ]
    return "\n".join(lines) + "\n"


def _triton_version() -> str:
    import triton
    return triton.__version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="markdown file to write the report section into")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--layers", type=int, help="fewer layers than 32, for a quick try")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    args = parser.parse_args()
    # A fresh kernel cache: engine start to ready includes compiling every Triton kernel.
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="lite-bench-triton-")
    device = torch.device("cuda")
    device_name = torch.cuda.get_device_name(device)
    hf_config = dict(LLAMA3_8B, **({"num_hidden_layers": args.layers} if args.layers else {}))
    rate = copy_rate(device)
    print(f"copy rate {rate / 1e12:.2f} TB/s", flush=True)
    hf = None if args.skip_hf else hf_side(hf_config)
    gc.collect()  # transformers' model went with hf_side's frame: give its memory back
    torch.cuda.empty_cache()
    print(f"transformers: {hf}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        lite = lite_side(write_dummy_model(Path(tmp) / "llama3-8b-shape", hf_config), args)
        print(f"lite: {lite}", flush=True)
        w4a16 = lite_w4a16_side(write_dummy_model(Path(tmp) / "llama3-8b-shape-w4a16", dict(
            hf_config, quantization_config=awq_quantization_config(128))), args)
        print(f"lite W4A16: {w4a16}", flush=True)
    text = report(args, device_name, rate, lite, w4a16, hf)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"copy_rate": rate, "lite": lite, "w4a16": w4a16, "hf": hf}, indent=1))
    if args.output:
        write_section(Path(args.output), "cuda-" + device_name.lower().replace(" ", "-"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
