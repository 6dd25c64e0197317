"""Batch-1 int4 GEMV variants on the Llama-3-8B projection shapes (CUDA), for benchmarks/NOTES.md.

    python benchmarks/int4_gemv_variants.py

Times lite's W4A16 path (lite/backends/cuda/kernels/linear.py) as shipped and its GEMV
(int4_gemv_gluon.py, or int4_gemv_triton.py without Gluon) over a grid of tile configurations,
each over 8 copies of the weight (several times the L2) replayed from a CUDA graph, median of 3,
beside cuBLAS on bf16 weights of the same shape, and checks it against the reference op. Rates are
GB/s of int4 + scales + zeros bytes read. A candidate kernel goes beside the shipped one here while
it is tried (benchmarks/NOTES.md keeps the results).
"""
from __future__ import annotations

import sys
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.profile_decode import random_int4, weight_bytes  # noqa: E402
from lite.backends import reference  # noqa: E402
from lite.backends.cuda.kernels import int4_gemv_triton, linear  # noqa: E402
from lite.quantize.int4 import Int4Weight  # noqa: E402

SHAPES = {"qkv_proj": (6144, 4096), "o_proj": (4096, 4096), "gate_up_proj": (28672, 4096), "down_proj": (4096, 14336)}


def gb_per_s(fn, weights: list) -> float:
    """Read rate of fn over every weight in turn, replayed from a CUDA graph as in the engine's
    decode steps: timed from Python, a small kernel's launch cost would be most of its time."""
    fn(weights[0])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for weight in weights:
            fn(weight)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        graph.replay()
    end.record()
    end.synchronize()
    return sum(map(weight_bytes, weights)) * 10 / start.elapsed_time(end) / 1e6


def best_of(fn, configs: list[dict], weights: list) -> tuple[float, dict]:
    rates = [median(gb_per_s(lambda w: fn(w, **config), weights) for _ in range(3)) for config in configs]
    best = max(range(len(configs)), key=rates.__getitem__)
    return rates[best], configs[best]


def main() -> int:
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}")
    kernels = linear.int4_gemv
    tile_key = "tile_words" if kernels is not int4_gemv_triton else "groups_per_tile"
    configs = [{"block_n": n, tile_key: t, "splits": s, "num_warps": w, "ahead": a}
               for n in (16, 32, 64) for t in ((64, 128) if tile_key == "tile_words" else (2, 4))
               for s in (1, 4, 8) for w in (2, 4) for a in (1, 2)]
    if kernels is not int4_gemv_triton:  # the Gluon kernel: 2 or 4 words a thread
        configs = [{**c, "vec": v} for c in configs for v in (2, 4)]
    for name, shape in SHAPES.items():
        weights = [random_int4(shape) for _ in range(8)]
        x = torch.randn(1, shape[1], device="cuda", dtype=torch.bfloat16)
        q = Int4Weight(torch.randint(0, 16, shape, dtype=torch.uint8, device="cuda"),
                       torch.rand(shape[0], shape[1] // 128, device="cuda").half() * 0.01,
                       torch.randint(0, 16, (shape[0], shape[1] // 128), dtype=torch.uint8, device="cuda"), 128)
        expected = reference.linear_w4a16(x.float(), q).squeeze(0)
        got = linear.linear_w4a16(x, linear.prepare_w4a16(q, torch.device("cuda"))).reshape(-1).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        current = median(gb_per_s(lambda w: linear.linear_w4a16(x, w), weights) for _ in range(3))
        dense = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
        cublas = median(gb_per_s(lambda w: torch.nn.functional.linear(x, w), dense) for _ in range(3))
        rate, config = best_of(lambda w, **c: kernels.gemv(x, w, **c), configs, weights)
        print(f"{name:13s} {shape}: bf16 cuBLAS {cublas:5.0f} GB/s | int4 shipped {current:5.0f} | GEMV best "
              f"tiles {rate:5.0f} {config} | max rel. error {error:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
