"""Batch-1 int4 GEMV variants on the Llama-3-8B projection shapes (CUDA), for benchmarks/NOTES.md.

    python benchmarks/int4_gemv_variants.py

Times lite's W4A16 GEMV (lite/backends/cuda/kernels/linear.py) and a candidate over a grid of tile
configurations, each over 8 copies of the weight (several times the L2) replayed from a CUDA graph,
median of 3, beside cuBLAS on bf16 weights of the same shape, and checks
the candidate against the reference op. Prints read rates in GB/s of int4 + scales + zeros bytes.

The candidate unpacks nibbles without int-to-float conversions: a nibble shifted into the top
mantissa bits of 1.0f and OR-ed in (one shift and one LOP3) is the float 1 + q/16, so
sum_k x_k (q_k - z) = 16 (sum_k x_k f_k - sum_k x_k) - z sum_k x_k.
"""
from __future__ import annotations

import sys
from pathlib import Path
from statistics import median

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.profile_decode import random_int4, weight_bytes  # noqa: E402
from lite.backends import reference  # noqa: E402
from lite.backends.cuda.kernels import linear  # noqa: E402
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


def main() -> int:
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}")
    for name, shape in SHAPES.items():
        # Up to a whole row per tile: then a program issues all its loads at once, no loop.
        whole_row = triton.next_power_of_2(shape[1] // 128)
        configs = [dict(block_n=n, groups_per_tile=g, num_warps=w, num_stages=1)
                   for n in (1, 2, 4, 8, 16) for g in (4, 16, whole_row) for w in (2, 4, 8)
                   if n * g * 64 <= 32768]
        weights = [random_int4(shape) for _ in range(8)]
        x = torch.randn(1, shape[1], device="cuda", dtype=torch.bfloat16)
        q = Int4Weight(torch.randint(0, 16, shape, dtype=torch.uint8, device="cuda"),
                       torch.rand(shape[0], shape[1] // 128, device="cuda").half() * 0.01,
                       torch.randint(0, 16, (shape[0], shape[1] // 128), dtype=torch.uint8, device="cuda"), 128)
        expected = reference.linear_w4a16(x.float(), q).squeeze(0)
        got = linear.linear_w4a16(x, linear.prepare_w4a16(q, torch.device("cuda"))).squeeze(0).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        current = median(gb_per_s(lambda w: linear.linear_w4a16(x, w), weights) for _ in range(3))
        dense = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
        cublas = median(gb_per_s(lambda w: torch.nn.functional.linear(x, w), dense) for _ in range(3))
        rates = [median(gb_per_s(lambda w: linear.int4_gemv(x, w, **config), weights) for _ in range(3))
                 for config in configs]
        best = max(range(len(configs)), key=rates.__getitem__)
        print(f"{name:13s} {shape}: bf16 cuBLAS {cublas:5.0f} GB/s | int4 shipped {current:5.0f} GB/s | best "
              f"tiles {rates[best]:5.0f} GB/s {configs[best]} | max rel. error {error:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
