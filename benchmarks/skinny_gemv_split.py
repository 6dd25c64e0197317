"""Batch-1 bf16 projections through cuBLAS: as they are, and split along K by a reshape.

    python benchmarks/skinny_gemv_split.py

cuBLAS runs a 4096x4096 projection at one row as 64 tiles on 132 SMs (o_proj reads at ~1.7 TB/s
where gate_up reads at ~2.7). Viewing W [N, K] as [N*s, K/s] and x as [s, K/s] gives cuBLAS s
times the output tiles for the same bytes; y[n] is then the sum of the s diagonal products
Y[h, n*s + h]. Graph-timed over 8 weight copies (past the L2), median of 5.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

SHAPES = {"qkv_proj": (6144, 4096), "o_proj": (4096, 4096), "gate_up_proj": (28672, 4096),
          "down_proj": (4096, 14336), "lm_head": (128256, 4096)}
COPIES = 8


def split_linear(x: torch.Tensor, weight: torch.Tensor, s: int) -> torch.Tensor:
    n, k = weight.shape
    partial = x.view(s, k // s) @ weight.view(n * s, k // s).T
    return partial.view(s, n, s).diagonal(dim1=0, dim2=2).sum(-1).unsqueeze(0)


def graph_us(fn, weights) -> float:
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for w in weights:
            fn(w)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in weights:
            fn(w)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        start.record()
        for _ in range(10):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / 10 / len(weights))
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "| us per projection (GB/s)")
    for name, (n, k) in SHAPES.items():
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / 64 for _ in range(COPIES)]
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        line = f"{name:13s}"
        for s in (1, 2, 4, 8):
            fn = (lambda w: F.linear(x, w)) if s == 1 else (lambda w, s=s: split_linear(x, w, s))
            if s > 1:
                torch.testing.assert_close(fn(weights[0]).float(), F.linear(x, weights[0]).float(),
                                           atol=2e-2, rtol=2e-2)
            us = graph_us(fn, weights)
            line += f" | split {s}: {us:6.1f} us ({n * k * 2 / us / 1e3:5.0f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
