"""Where a decode step's time goes, on the Llama-3-8B shape with dummy weights (CUDA backend).

    python benchmarks/profile_decode.py [--batch 1 64] [--context 256]

Prints, per batch size: the engine's wall time per step, the GPU time of one captured step
(graph replay + logits), the eager step's kernels by total GPU time, and each projection's
achieved read bandwidth at that batch -- the split between host overhead, small kernels and
the matmuls that METHOD.md asks for before any tuning.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lite.backends.base import BatchLayout, ForwardContext  # noqa: E402
from lite.config import EngineConfig  # noqa: E402
from lite.engine.dummy import LLAMA3_8B, write_dummy_model  # noqa: E402
from lite.engine.engine import LLMEngine  # noqa: E402
from lite.engine.sequence import SamplingParams  # noqa: E402
from lite.quantize.awq_format import awq_quantization_config  # noqa: E402


def event_ms(fn, repeats: int = 30) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def engine_step_ms(engine: LLMEngine, batch: int, context: int, async_scheduling: bool) -> float:
    """Engine wall time per step with `batch` requests decoding (prefill excluded)."""
    engine.async_scheduling = async_scheduling
    prompts = [[(7 * i + j) % 1000 + 1 for j in range(context)] for i in range(batch)]
    for prompt in prompts:
        engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))
    stamps = []
    while engine.has_unfinished():
        outputs = engine.step()
        if outputs and all(len(o.token_ids) > 1 for o in outputs):
            stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3


def decode_layout(engine: LLMEngine, batch: int, context: int) -> BatchLayout:
    blocks = -(-context // engine.block_size)
    tables = [list(range(1 + i * blocks, 1 + (i + 1) * blocks)) for i in range(batch)]
    slots = [t[(context - 1) // engine.block_size] * engine.block_size + (context - 1) % engine.block_size
             for t in tables]
    return BatchLayout([1] * batch, [context] * batch, tables, slots, engine.block_size)


def projection_shapes(engine: LLMEngine) -> list[tuple[str, list]]:
    layers = engine.model.model.layers
    shapes = [(name, [get(layer).weight for layer in layers]) for name, get in (
        ("qkv_proj", lambda l: l.self_attn.qkv_proj), ("o_proj", lambda l: l.self_attn.o_proj),
        ("gate_up_proj", lambda l: l.mlp.gate_up_proj), ("down_proj", lambda l: l.mlp.down_proj))]
    return shapes + [("lm_head", [engine.model.lm_head.weight])]


def weight_bytes(weight) -> int:
    if isinstance(weight, torch.Tensor):
        return weight.numel() * weight.element_size()
    return sum(t.numel() * t.element_size() for t in (weight.packed, weight.scales, weight.zeros))


def gb_per_s(fn, weights: list) -> tuple[float, float]:
    """(GB/s, µs per weight) of fn over every weight in turn: all 32 layers' copies, no L2 reuse."""
    ms = event_ms(lambda: [fn(w) for w in weights], 10)
    return sum(map(weight_bytes, weights)) / ms / 1e6, ms * 1e3 / len(weights)


def random_int4(shape: torch.Size):
    from lite.backends.cuda.kernels import linear
    from lite.quantize.int4 import Int4Weight
    n, k = shape
    return linear.prepare_w4a16(Int4Weight(
        torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda"), torch.rand(n, k // 128, device="cuda").half(),
        torch.randint(0, 16, (n, k // 128), dtype=torch.uint8, device="cuda"), 128), torch.device("cuda"))


def projection_bandwidth(engine: LLMEngine, batch: int) -> None:
    """Each projection's read rate at this batch: bf16 through cuBLAS, and int4 weights of the
    same shape through lite's W4A16 path (benchmarks/int4_gemv_variants.py sweeps its tiles)."""
    from lite.backends.cuda.kernels import linear

    for name, weights in projection_shapes(engine):
        shape = weights[0].shape
        if not isinstance(weights[0], torch.Tensor):  # the engine's own are int4: bf16 copies to compare
            weights = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(8)]
        x = torch.randn(batch, shape[1], device="cuda", dtype=torch.bfloat16)
        line = f"  {name:13s} bf16 cuBLAS {gb_per_s(lambda w: F.linear(x, w), weights)[0]:5.0f} GB/s"
        int4 = [random_int4(shape) for _ in range(8)]  # 8 copies: several times the L2
        line += f" | int4 {gb_per_s(lambda w: linear.linear_w4a16(x, w), int4)[0]:5.0f} GB/s"
        print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--w4a16", action="store_true", help="profile the model with int4 (W4A16) decoder linears")
    args = parser.parse_args()
    config = dict(LLAMA3_8B, **({"num_hidden_layers": args.layers} if args.layers else {}))
    if args.w4a16:
        config["quantization_config"] = awq_quantization_config(128)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dummy_model(Path(tmp) / "llama3-8b-shape", config)
        engine = LLMEngine(EngineConfig(model=str(folder), backend="cuda", dtype="bfloat16", load_format="dummy",
                                        max_model_len=4096, max_num_seqs=max(args.batch)))
    runner = engine.runner
    for batch in args.batch:
        wall_ms = {mode: engine_step_ms(engine, batch, args.context, mode) for mode in (False, True)}

        layout = decode_layout(engine, batch, args.context)
        token_ids, position_list = list(range(1, batch + 1)), [args.context - 1] * batch
        graph = runner.graph_runner
        replay_ms = event_ms(lambda: runner.model.compute_logits(graph.replay(token_ids, position_list, layout)))
        input_ids = torch.tensor(token_ids, device="cuda")
        positions = torch.tensor(position_list, device="cuda")
        ctx = ForwardContext(runner.attention, runner.attention.build_metadata(layout), runner.kv_caches)
        eager = lambda: runner.model.compute_logits(runner.model(input_ids, positions, ctx))  # noqa: E731
        eager_ms = event_ms(eager)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            eager()
            torch.cuda.synchronize()
        kernels = [e for e in prof.key_averages() if e.device_time_total > 0]
        kernels.sort(key=lambda e: -e.device_time_total)
        total_us = sum(e.device_time_total for e in kernels)
        print(f"\n== batch {batch}, context {args.context}: engine step {wall_ms[True]:.3f} ms with async "
              f"scheduling, {wall_ms[False]:.3f} ms without | graph replay + "
              f"logits {replay_ms:.3f} ms | eager forward + logits {eager_ms:.3f} ms | kernel time "
              f"{total_us / 1e3:.3f} ms in {sum(e.count for e in kernels)} launches")
        for e in kernels[:14]:
            print(f"  {e.device_time_total / 1e3:8.3f} ms  {e.count:5d}x  {e.device_time_total / e.count:8.2f} µs  "
                  f"{e.key[:90]}")
        projection_bandwidth(engine, batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
