"""Batch-1 int4 GEMV variants on the Llama-3-8B projection shapes (CUDA), for benchmarks/NOTES.md.

    python benchmarks/int4_gemv_variants.py

Times lite's W4A16 path (lite/backends/cuda/kernels/linear.py) as shipped and its GEMV over a grid
of tile configurations, each over 8 copies of the weight (several times the L2) replayed from a
CUDA graph, median of 3, beside cuBLAS on bf16 weights of the same shape, and checks it against
the reference op. Rates are GB/s of int4 + scales + zeros bytes read. A candidate kernel goes
beside the shipped one here while it is tried (benchmarks/NOTES.md keeps the results).
"""
from __future__ import annotations

import sys
from pathlib import Path
from statistics import median

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.profile_decode import random_int4, weight_bytes  # noqa: E402
from lite.backends import reference  # noqa: E402
from lite.backends.cuda.kernels import linear  # noqa: E402
from lite.quantize.int4 import Int4Weight  # noqa: E402

SHAPES = {"qkv_proj": (6144, 4096), "o_proj": (4096, 4096), "gate_up_proj": (28672, 4096), "down_proj": (4096, 14336)}


# Candidate (version 6): R rows interleaved per 32-bit word column, so one thread's 16-byte load
# holds R rows x 8 inputs and each activation it converts serves R rows.
@triton.jit
def _int4_gemv_rows_kernel(x_ptr, w_ptr, scales_ptr, zeros_ptr, out_ptr, N, K, GROUP: tl.constexpr,
                           GROUPS_PER_TILE: tl.constexpr, BLOCK_R: tl.constexpr, R: tl.constexpr):
    # w: [N / R, K / 8, R] int32, word (b, c, r) = the nibbles of row b R + r, inputs 8c .. 8c + 7
    # (input 8c + j in bits 4j .. 4j + 3). Grid: (cdiv(N / R, BLOCK_R),).
    CHUNKS: tl.constexpr = GROUP // 8
    blocks = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    block_mask = blocks < N // R
    g = tl.arange(0, GROUPS_PER_TILE)
    c = tl.arange(0, CHUNKS)
    r = tl.arange(0, R)
    rows = blocks[:, None] * R + r[None, :]  # [BLOCK_R, R]
    num_groups = K // GROUP
    acc = tl.zeros((BLOCK_R, R), tl.float32)
    for g0 in range(0, num_groups, GROUPS_PER_TILE):
        groups = g0 + g
        group_mask = groups < num_groups
        chunk = groups[:, None] * CHUNKS + c[None, :]  # [G, C]
        words = tl.load(w_ptr + (blocks[:, None, None, None] * (K // 8) + chunk[None, :, :, None]) * R
                        + r[None, None, None, :],
                        mask=block_mask[:, None, None, None] & group_mask[None, :, None, None], other=0)
        dots = tl.zeros((BLOCK_R, GROUPS_PER_TILE, CHUNKS, R), tl.float32)
        x_sum = tl.zeros((GROUPS_PER_TILE, CHUNKS), tl.float32)
        for j in tl.static_range(8):
            xj = tl.load(x_ptr + chunk * 8 + j, mask=group_mask[:, None], other=0.0).to(tl.float32)
            if 4 * j <= 19:
                bits = words << (19 - 4 * j)
            else:
                bits = words >> (4 * j - 19)
            f = ((bits & 0x780000) | 0x3F800000).to(tl.float32, bitcast=True)  # 1 + q / 16
            dots += f * xj[None, :, :, None]
            x_sum += xj
        group_dots = tl.sum(dots, axis=2)  # [BLOCK_R, G, R]
        group_x = tl.sum(x_sum, axis=1)  # [G]
        meta = rows[:, None, :] * num_groups + groups[None, :, None]
        meta_mask = block_mask[:, None, None] & group_mask[None, :, None]
        scale = tl.load(scales_ptr + meta, mask=meta_mask, other=0.0).to(tl.float32)
        zero = tl.load(zeros_ptr + meta, mask=meta_mask, other=0).to(tl.float32)
        acc += tl.sum(scale * (16.0 * group_dots - (16.0 + zero) * group_x[None, :, None]), axis=1)
    tl.store(out_ptr + rows, acc.to(out_ptr.dtype.element_ty), mask=block_mask[:, None])


def interleave_rows(q: Int4Weight, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = q.qweight.shape
    nibbles = q.qweight.to(torch.int64).view(n // rows, rows, k // 8, 8).permute(0, 2, 1, 3)
    words = (nibbles << (4 * torch.arange(8, device=nibbles.device))).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).contiguous()
    return words, q.scales.contiguous(), q.zeros.contiguous()


def int4_gemv_rows(x: torch.Tensor, packed: tuple, rows: int, block_r: int, groups_per_tile: int,
                   num_warps: int) -> torch.Tensor:
    words, scales, zeros = packed
    n, k = words.shape[0] * rows, words.shape[1] * 8
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    _int4_gemv_rows_kernel[(triton.cdiv(n // rows, block_r),)](
        x.reshape(k), words, scales, zeros, out, n, k, GROUP=128, GROUPS_PER_TILE=groups_per_tile,
        BLOCK_R=block_r, R=rows, num_warps=num_warps, num_stages=1)
    return out


def packed_bytes(packed: tuple) -> int:
    return sum(t.numel() * t.element_size() for t in packed)


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
    size = packed_bytes if isinstance(weights[0], tuple) else weight_bytes
    return sum(map(size, weights)) * 10 / start.elapsed_time(end) / 1e6


def best_of(fn, configs: list[dict], weights: list) -> tuple[float, dict]:
    rates = [median(gb_per_s(lambda w: fn(w, **config), weights) for _ in range(3)) for config in configs]
    best = max(range(len(configs)), key=rates.__getitem__)
    return rates[best], configs[best]


def main() -> int:
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}")
    configs = [dict(block_n=n, groups_per_tile=g, num_warps=w, num_stages=1)
               for n in (4, 8, 16, 32) for g in (2, 4, 16) for w in (2, 4, 8)]
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
        rate, config = best_of(lambda w, **c: linear.int4_gemv(x, w, **c), configs, weights)
        print(f"{name:13s} {shape}: bf16 cuBLAS {cublas:5.0f} GB/s | int4 shipped {current:5.0f} | GEMV best "
              f"tiles {rate:5.0f} {config} | max rel. error {error:.1e}", flush=True)
        for rows in (4, 8):
            packed = [interleave_rows(Int4Weight(torch.randint(0, 16, shape, dtype=torch.uint8, device="cuda"),
                                                 w.scales, w.zeros, 128), rows) for w in weights]
            got = int4_gemv_rows(x, interleave_rows(q, rows), rows, 4, 2, 4).float()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            row_configs = [dict(block_r=b, groups_per_tile=g, num_warps=w)
                           for b in (1, 2, 4, 8) for g in (1, 2, 4) for w in (2, 4, 8)]
            rate, config = best_of(lambda w, **c: int4_gemv_rows(x, w, rows, **c), row_configs, packed)
            print(f"  version 6, {rows} rows per word column: best {rate:5.0f} GB/s {config} | max rel. error "
                  f"{error:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
