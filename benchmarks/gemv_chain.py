"""Batch-1 projections timed as a decode step runs them: each one after a small Triton kernel
(an RMSNorm), all in one CUDA graph, so launch gaps and the overlap that programmatic dependent
launch allows count as they do in the engine.

    python benchmarks/gemv_chain.py [--block-n 4 8] [--block-k 512 1024] [--warps 4 8]

For each Llama-3-8B projection: µs and GB/s of cuBLAS (F.linear), of lite's 16-bit Triton GEMV
over a sweep of tiles with PDL on and (its best tile) off, and of the int4 GEMV (PDL on / off;
with Gluon, the plain-Triton fallback beside it).
The norm-only chain's time is subtracted, so a figure is the projection's share of the chain.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.profile_decode import random_int4  # noqa: E402
from lite.backends.cuda.kernels import gemv, int4_gemv_triton, linear, norm, pdl  # noqa: E402

SHAPES = {"qkv_proj": (6144, 4096), "o_proj": (4096, 4096), "gate_up_proj": (28672, 4096),
          "down_proj": (4096, 14336), "lm_head": (128256, 4096)}
CHAIN = 32  # projections per graph, cycling through copies that together exceed the L2


def set_pdl(on: bool) -> None:
    os.environ["LITE_PDL"] = "1" if on else "0"
    pdl._enabled.cache_clear()


def chain_us(fn, weights: list, x: torch.Tensor, norm_weight: torch.Tensor) -> float:
    """Median µs of one (norm, fn) pair over graph replays of CHAIN pairs."""
    def body():
        for i in range(CHAIN):
            y = norm.rms_norm(x, norm_weight, 1e-5)
            if fn is not None:
                fn(y, weights[i % len(weights)])
    body()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    times = []
    for _ in range(15):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / CHAIN)
    return statistics.median(times)


def copies(nbytes: int) -> int:
    """Enough copies of a weight to exceed the L2 together (~400 MB), 2 to CHAIN of them."""
    return max(2, min(CHAIN, -(-400_000_000 // nbytes)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-n", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--block-k", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    args = parser.parse_args()
    sweep = list(itertools.product(args.block_n, args.block_k, args.warps))
    print(f"{torch.cuda.get_device_name()} | triton GEMV sweep (block_n, block_k, warps): {len(sweep)} tiles")
    for name in args.shapes:
        n, k = SHAPES[name]
        nbytes = n * k * 2
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5 for _ in range(copies(nbytes))]
        x = torch.randn(k, device="cuda", dtype=torch.bfloat16)
        norm_weight = torch.ones(k, device="cuda", dtype=torch.bfloat16)
        set_pdl(True)
        base = {True: chain_us(None, weights, x, norm_weight)}
        set_pdl(False)
        base[False] = chain_us(None, weights, x, norm_weight)

        def report(label, us):
            print(f"  {name:13s} {label:44s} {us:7.2f} µs {nbytes / us / 1e3:6.0f} GB/s", flush=True)

        report("cuBLAS", chain_us(lambda y, w: F.linear(y, w), weights, x, norm_weight)
               - base[False])
        expected = F.linear(x.float(), weights[0].float())
        results = []
        set_pdl(True)
        for block_n, block_k, warps in sweep:
            run = lambda y, w: gemv.gemv(y, w, None, block_n, block_k, warps)  # noqa: E731
            error = (run(x, weights[0]).float() - expected).abs().max().item()
            results.append((chain_us(run, weights, x, norm_weight) - base[True], (block_n, block_k, warps), error))
        results.sort()
        for us, tile, error in results[:3]:
            report(f"triton PDL {tile} err {error:.1e}", us)
        best = results[0][1]
        report("triton PDL, the shipped tile (gemv.linear)", chain_us(gemv.linear, weights, x, norm_weight) - base[True])
        set_pdl(False)
        report(f"triton no PDL {best}", chain_us(lambda y, w: gemv.gemv(y, w, None, *best), weights, x, norm_weight)
               - base[False])
        del weights
        int4 = [random_int4((n, k)) for _ in range(copies(nbytes // 4))]
        int4_bytes = n * k // 2 + n * (k // 128) * 3
        for on in (True, False):
            set_pdl(on)
            us = chain_us(lambda y, w: linear.linear_w4a16(y, w), int4, x, norm_weight) - base[on]
            print(f"  {name:13s} {'int4 GEMV PDL ' + ('on' if on else 'off'):44s} {us:7.2f} µs "
                  f"{int4_bytes / us / 1e3:6.0f} GB/s", flush=True)
        if linear.int4_gemv is not int4_gemv_triton:  # the plain-Triton fallback, for comparison
            set_pdl(True)
            tiles = int4_gemv_triton.gemv_tiles(n, k)
            us = chain_us(lambda y, w: int4_gemv_triton.gemv(y, w, None, **tiles), int4, x, norm_weight) - base[True]
            print(f"  {name:13s} {'int4 GEMV, plain-Triton fallback, PDL on':44s} {us:7.2f} µs "
                  f"{int4_bytes / us / 1e3:6.0f} GB/s", flush=True)
        del int4
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
