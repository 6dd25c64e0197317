"""16-bit GEMV for batch-1 decode: y = W x with W [N, K] in the model's dtype.

cuBLAS reads large 16-bit weights near the copy rate, but at batch 1 it splits K for the narrow
projections (a second, reduce kernel) and, launched the usual way, cannot start reading until the
kernel before it has ended. This GEMV fetches its first weight tile while the previous kernel
finishes (pdl.py) and accumulates [BLOCK_N, BLOCK_K] products elementwise, so the cross-thread
sum happens once, at the end. Splitting K as the int4 GEMV does measured slower for every
Llama-3-8B shape (benchmarks/NOTES.md): a program reads whole rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, N, K, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr):
    # Grid: (cdiv(N, BLOCK_N),); a program reads BLOCK_N whole rows, BLOCK_K columns at a time.
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    row_starts = w_ptr + rows.to(tl.int64)[:, None] * K
    cols = tl.arange(0, BLOCK_K)
    # Weights are never written: the first tile is read before the wait for the previous kernel,
    # and each later one is requested before the products of the one before it.
    tile = tl.load(row_starts + cols[None, :], mask=row_mask[:, None] & (cols < K)[None, :], other=0.0)
    wait_for_inputs(USE_PDL)
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + k0 + cols, mask=k0 + cols < K, other=0.0).to(tl.float32)
        products = tile.to(tl.float32) * x[None, :]
        next_cols = k0 + BLOCK_K + cols
        tile = tl.load(row_starts + next_cols[None, :], mask=row_mask[:, None] & (next_cols < K)[None, :],
                       other=0.0)
        acc += products
    sums = tl.sum(acc, axis=1)
    if HAS_BIAS:
        sums += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, sums.to(out_ptr.dtype.element_ty), mask=row_mask)


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, block_n: int = 8,
         block_k: int = 1024, num_warps: int = 4) -> torch.Tensor:
    """One row: x [..., K] holding one row, weight [N, K] contiguous -> [..., N]."""
    n, k = weight.shape
    row = x.reshape(k).contiguous()
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        row, weight, bias if bias is not None else weight, out, n, k, HAS_BIAS=bias is not None,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=1, **launch_options(x.device))
    return out.view(*x.shape[:-1], n)


# Tiles from sweeps on an H100, each projection timed after a small kernel in one CUDA graph
# (benchmarks/gemv_chain.py, NOTES.md): many rows (gate_up, the output head) take narrower blocks.
GEMV_TILE = dict(block_n=8, block_k=1024, num_warps=4)
GEMV_TILE_MANY_ROWS = dict(block_n=4, block_k=1024, num_warps=8)
MANY_ROWS = 16384


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with one row of 16-bit activations (batch-1 decode) through the GEMV."""
    if (x.numel() == x.shape[-1] and x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
            and weight.is_contiguous()):
        return gemv(x, weight, bias, **(GEMV_TILE_MANY_ROWS if weight.shape[0] >= MANY_ROWS else GEMV_TILE))
    return F.linear(x, weight, bias)
