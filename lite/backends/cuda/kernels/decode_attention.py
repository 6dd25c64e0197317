"""Paged decode attention (one new token per sequence), split-K over the context (flash-decoding).

Grid (sequences, kv_heads, splits): a program attends the GROUP query heads of one kv head, so
each K/V row is read once for the whole group (grouped-query attention), over one contiguous
slice of the context. With several splits a second kernel merges the partial softmaxes by their
log-sum-exp. Split lengths are computed in the kernel from each sequence's length, so the grid
depends only on the batch size: a captured CUDA graph replays it for any lengths.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.online_softmax import online_softmax_step
from lite.backends.cuda.kernels.paged_kv import load_context_tile
from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs

LOG2E = 1.4426950408889634
MAX_SPLITS = 32
MIN_SPLIT_TOKENS = 128  # a split shorter than this costs more in the merge than it saves
BLOCK_N = 64


# Table widths and split counts change from step to step: compile once, not per divisibility class.
@triton.jit(do_not_specialize=["table_stride", "num_splits"])
def _decode_split_kernel(q_ptr, k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, k_scale_ptr, k_zero_ptr, v_scale_ptr,
                         v_zero_ptr, block_tables_ptr, context_lens_ptr, out_ptr, partial_out_ptr, partial_lse_ptr,
                         q_token_stride, q_head_stride, k_token_stride, k_head_stride, v_token_stride,
                         v_head_stride, table_stride, num_kv_heads, num_heads, scale_log2,
                         num_splits, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
                         BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                         SPLIT: tl.constexpr, KV_BITS: tl.constexpr, PRECISION: tl.constexpr,
                         USE_PDL: tl.constexpr):
    # num_splits is a run-time value and SPLIT (num_splits > 1) the only compile-time choice:
    # every batch size of the captured graphs shares one compiled kernel.
    wait_for_inputs(USE_PDL)
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    # Split lengths are whole tiles, so every split but the last reads only full tiles.
    split_len = tl.cdiv(tl.cdiv(context_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, context_len)

    g = tl.arange(0, BLOCK_G)
    dims = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    head_mask = g < GROUP
    # q: [BLOCK_G, BLOCK_D]; rows past GROUP are padding that tl.dot needs (M >= 16).
    q = tl.load(q_ptr + seq * q_token_stride + heads[:, None] * q_head_stride + dims[None, :],
                mask=head_mask[:, None] & (dims[None, :] < HEAD_DIM), other=0.0)
    m = tl.full((BLOCK_G,), -float("inf"), tl.float32)
    l = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    table = block_tables_ptr + seq * table_stride
    for tile_start in range(start, end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        mask = positions < end
        # The new token (position context_len - 1) is row `seq` of this step's k and v.
        k = load_context_tile(k_cache_ptr, k_scale_ptr, k_zero_ptr, k_ptr, k_token_stride, k_head_stride, table,
                              positions, mask, context_len - 1, seq, kv_head, num_kv_heads, dims, HEAD_DIM,
                              KV_BITS, BLOCK_SIZE).to(q.dtype)
        v = load_context_tile(v_cache_ptr, v_scale_ptr, v_zero_ptr, v_ptr, v_token_stride, v_head_stride, table,
                              positions, mask, context_len - 1, seq, kv_head, num_kv_heads, dims, HEAD_DIM,
                              KV_BITS, BLOCK_SIZE).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2  # [BLOCK_G, BLOCK_N], log2 units
        s = tl.where(mask[None, :], s, -float("inf"))
        m, l, acc = online_softmax_step(m, l, acc, s, v, PRECISION)

    out_mask = head_mask[:, None] & (dims[None, :] < HEAD_DIM)
    if not SPLIT:  # the whole context in one program: write the answer directly
        out = acc / l[:, None]
        tl.store(out_ptr + (seq * num_heads + heads[:, None]) * HEAD_DIM + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # An empty split (a short sequence) leaves l = 0: lse -inf, weight 0 in the merge.
        out = acc / tl.where(l > 0, l, 1.0)[:, None]
        lse = tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)), -float("inf"))
        row = (seq * num_heads + heads) * num_splits + split
        tl.store(partial_out_ptr + row[:, None] * HEAD_DIM + dims[None, :], out, mask=out_mask)
        tl.store(partial_lse_ptr + row, lse, mask=head_mask)


@triton.jit(do_not_specialize=["num_splits"])
def _merge_splits_kernel(partial_out_ptr, partial_lse_ptr, out_ptr, num_splits,
                         HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
                         USE_PDL: tl.constexpr):
    # Grid: (sequences * heads,). partial_out: [seqs * heads, num_splits, HEAD_DIM] float32.
    wait_for_inputs(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    splits = tl.arange(0, BLOCK_S)
    dims = tl.arange(0, BLOCK_D)
    lse = tl.load(partial_lse_ptr + row * num_splits + splits, mask=splits < num_splits, other=-float("inf"))
    weight = tl.exp2(lse - tl.max(lse, 0))  # split 0 is never empty, so the max is finite
    parts = tl.load(partial_out_ptr + (row * num_splits + splits[:, None]) * HEAD_DIM + dims[None, :],
                    mask=(splits[:, None] < num_splits) & (dims[None, :] < HEAD_DIM), other=0.0)
    out = tl.sum(parts * weight[:, None], 0) / tl.sum(weight, 0)
    tl.store(out_ptr + row * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM)


def num_decode_splits(num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int) -> int:
    """Enough programs to give every multiprocessor two, but no split shorter than MIN_SPLIT_TOKENS."""
    wanted = triton.cdiv(2 * num_sms, num_seqs * num_kv_heads)
    useful = triton.cdiv(max_context, MIN_SPLIT_TOKENS)
    return max(1, min(wanted, useful, MAX_SPLITS))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache, block_tables: torch.Tensor,
                     context_lens: torch.Tensor, scale: float, num_splits: int, out: torch.Tensor) -> None:
    """q: [seqs, heads, head_dim]; k, v: [seqs, kv_heads, head_dim], the step's new rows, already
    stored (last dims contiguous); block_tables: [seqs, width] int64 (or int32);
    context_lens: [seqs] int64 (>= 1, this step's token included); out: [seqs, heads, head_dim]
    contiguous, written. cache: a PagedKVCache holding this step's K/V already."""
    num_seqs, num_heads, head_dim = q.shape
    if num_seqs == 0:
        return
    num_kv_heads = cache.num_kv_heads
    group = num_heads // num_kv_heads
    block_d = triton.next_power_of_2(head_dim)
    partial_out = partial_lse = out
    if num_splits > 1:
        partial_out = torch.empty((num_seqs * num_heads, num_splits, head_dim), dtype=torch.float32, device=q.device)
        partial_lse = torch.empty((num_seqs * num_heads, num_splits), dtype=torch.float32, device=q.device)
    _decode_split_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, k, v, cache.k, cache.v, *cache.scale_tensors(), block_tables, context_lens, out, partial_out,
        partial_lse, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        block_tables.stride(0), num_kv_heads, num_heads, scale * LOG2E, num_splits,
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, BLOCK_D=block_d,
        BLOCK_N=BLOCK_N, BLOCK_SIZE=cache.block_size, SPLIT=num_splits > 1, KV_BITS=cache.kv_bits,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4, num_stages=2,
        **launch_options(q.device))
    if num_splits > 1:
        _merge_splits_kernel[(num_seqs * num_heads,)](
            partial_out, partial_lse, out, num_splits, HEAD_DIM=head_dim, BLOCK_D=block_d,
            BLOCK_S=MAX_SPLITS, num_warps=4, **launch_options(q.device))
