"""Varlen causal prefill attention over the paged cache (flash attention, online softmax).

The step's new K/V are stored before this runs, so each sequence's whole context -- a prefix
from the prefix cache or from earlier chunks, then this step's tokens -- is read from its blocks
alike. Grid (sequences, query tiles, heads); a program whose tile lies past its sequence's
queries returns at once, so one launch covers sequences of any lengths.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.online_softmax import online_softmax_step
from lite.backends.cuda.kernels.paged_kv import load_context_tile
from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs

LOG2E = 1.4426950408889634


@triton.jit(do_not_specialize=["table_stride"])  # the table width changes from step to step
def _prefill_kernel(q_ptr, k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, k_scale_ptr, k_zero_ptr, v_scale_ptr,
                    v_zero_ptr, block_tables_ptr, query_starts_ptr, context_lens_ptr, out_ptr,
                    q_token_stride, q_head_stride, k_token_stride, k_head_stride, v_token_stride, v_head_stride,
                    table_stride, num_kv_heads, num_heads, scale_log2,
                    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                    KV_BITS: tl.constexpr, PRECISION: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    seq = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    head = tl.program_id(2)
    query_start = tl.load(query_starts_ptr + seq)
    query_len = tl.load(query_starts_ptr + seq + 1) - query_start
    if tile * BLOCK_M >= query_len:
        return
    context_len = tl.load(context_lens_ptr + seq)
    prefix_len = context_len - query_len
    kv_head = head // GROUP

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the sequence
    row_mask = rows < query_len
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    tokens = (query_start + rows).to(tl.int64)
    q = tl.load(q_ptr + tokens[:, None] * q_token_stride + head * q_head_stride + dims[None, :],
                mask=row_mask[:, None] & dim_mask[None, :], other=0.0)
    query_pos = prefix_len + rows
    # Causal: this tile's last query sees positions up to its own; nothing later is read.
    kv_end = tl.minimum(context_len, prefix_len + (tile + 1) * BLOCK_M)

    m = tl.full((BLOCK_M,), -float("inf"), tl.float32)
    l = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    table = block_tables_ptr + seq * table_stride
    for tile_start in range(0, kv_end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        mask = positions < kv_end
        # This step's tokens (from prefix_len on) are rows query_start... of the step's k and v.
        k = load_context_tile(k_cache_ptr, k_scale_ptr, k_zero_ptr, k_ptr, k_token_stride, k_head_stride, table,
                              positions, mask, prefix_len, query_start, kv_head, num_kv_heads, dims, HEAD_DIM,
                              KV_BITS, BLOCK_SIZE).to(q.dtype)
        v = load_context_tile(v_cache_ptr, v_scale_ptr, v_zero_ptr, v_ptr, v_token_stride, v_head_stride, table,
                              positions, mask, prefix_len, query_start, kv_head, num_kv_heads, dims, HEAD_DIM,
                              KV_BITS, BLOCK_SIZE).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2  # [BLOCK_M, BLOCK_N]
        # Position 0 is visible to every query, so no row is all -inf after the first tile.
        s = tl.where(mask[None, :] & (positions[None, :] <= query_pos[:, None]), s, -float("inf"))
        m, l, acc = online_softmax_step(m, l, acc, s, v, PRECISION)
    out = acc / l[:, None]
    tl.store(out_ptr + (tokens[:, None] * num_heads + head) * HEAD_DIM + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & dim_mask[None, :])


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache, block_tables: torch.Tensor,
                      query_starts: torch.Tensor, context_lens: torch.Tensor, max_query_len: int, scale: float,
                      out: torch.Tensor) -> None:
    """q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim], already stored (last
    dims contiguous): the prefill rows of the step;
    query_starts: [seqs + 1] int64 offsets of each sequence's rows in q; context_lens: [seqs] int64;
    block_tables: [seqs, width] int64; out: [tokens, heads, head_dim] contiguous, written."""
    num_seqs = context_lens.shape[0]
    if num_seqs == 0:
        return
    _, num_heads, head_dim = q.shape
    num_kv_heads = cache.num_kv_heads
    block_m = 64 if max_query_len <= 64 or head_dim > 128 else 128
    grid = (num_seqs, triton.cdiv(max_query_len, block_m), num_heads)
    _prefill_kernel[grid](
        q, k, v, cache.k, cache.v, *cache.scale_tensors(), block_tables, query_starts, context_lens, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), block_tables.stride(0),
        num_kv_heads, num_heads, scale * LOG2E,
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m, BLOCK_N=64, BLOCK_SIZE=cache.block_size, KV_BITS=cache.kv_bits,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4 if block_m == 64 else 8, num_stages=2, **launch_options(q.device))
