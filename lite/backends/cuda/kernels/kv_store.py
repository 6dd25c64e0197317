"""Write new K/V rows into their paged-cache slots; with int8/int4 KV, quantize each row on the way in."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs


@triton.jit
def _store_row(src_ptr, dst_ptr, scale_ptr, zero_ptr, row, slot, head, token_stride, head_stride,
               num_kv_heads, HEAD_DIM: tl.constexpr, KV_BITS: tl.constexpr, LEVELS: tl.constexpr,
               BLOCK_P: tl.constexpr):
    # The row is read as (even, odd) element pairs so that int4 can pack a pair into one byte.
    pairs = tl.arange(0, BLOCK_P)
    mask = pairs < HEAD_DIM // 2
    src = src_ptr + row * token_stride + head * head_stride + 2 * pairs
    even = tl.load(src, mask=mask, other=0.0)
    odd = tl.load(src + 1, mask=mask, other=0.0)
    if KV_BITS == 0:
        dst = dst_ptr + (slot * num_kv_heads + head) * HEAD_DIM + 2 * pairs
        tl.store(dst, even.to(dst_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + 1, odd.to(dst_ptr.dtype.element_ty), mask=mask)
    else:
        even = even.to(tl.float32)
        odd = odd.to(tl.float32)
        low = tl.minimum(tl.min(tl.where(mask, even, float("inf")), 0), tl.min(tl.where(mask, odd, float("inf")), 0))
        high = tl.maximum(tl.max(tl.where(mask, even, -float("inf")), 0), tl.max(tl.where(mask, odd, -float("inf")), 0))
        scale = tl.maximum(high - low, 1e-8) / LEVELS
        # floor(x + 0.5): round half up where the reference rounds half to even; the two differ
        # only on exact ties, by one step, within the grid's own error.
        q_even = tl.minimum(tl.maximum(tl.floor((even - low) / scale + 0.5), 0.0), LEVELS).to(tl.uint8)
        q_odd = tl.minimum(tl.maximum(tl.floor((odd - low) / scale + 0.5), 0.0), LEVELS).to(tl.uint8)
        row_index = slot * num_kv_heads + head
        if KV_BITS == 8:
            dst = dst_ptr + row_index * HEAD_DIM + 2 * pairs
            tl.store(dst, q_even, mask=mask)
            tl.store(dst + 1, q_odd, mask=mask)
        else:
            tl.store(dst_ptr + row_index * (HEAD_DIM // 2) + pairs, q_even | (q_odd << 4), mask=mask)
        tl.store(scale_ptr + row_index, scale)
        tl.store(zero_ptr + row_index, low)


@triton.jit
def _kv_store_kernel(k_ptr, v_ptr, slot_ptr, k_cache_ptr, v_cache_ptr,
                     k_scale_ptr, k_zero_ptr, v_scale_ptr, v_zero_ptr,
                     k_token_stride, k_head_stride, v_token_stride, v_head_stride, num_kv_heads,
                     HEAD_DIM: tl.constexpr, KV_BITS: tl.constexpr, LEVELS: tl.constexpr,
                     BLOCK_P: tl.constexpr, USE_PDL: tl.constexpr):
    # Grid: (tokens, kv_heads). k, v: [tokens, kv_heads, head_dim] (strided views of the qkv output).
    wait_for_inputs(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    slot = tl.load(slot_ptr + row).to(tl.int64)
    if slot >= 0:  # -1: a padded row of a captured decode graph, nothing to store
        _store_row(k_ptr, k_cache_ptr, k_scale_ptr, k_zero_ptr, row, slot, head, k_token_stride,
                   k_head_stride, num_kv_heads, HEAD_DIM, KV_BITS, LEVELS, BLOCK_P)
        _store_row(v_ptr, v_cache_ptr, v_scale_ptr, v_zero_ptr, row, slot, head, v_token_stride,
                   v_head_stride, num_kv_heads, HEAD_DIM, KV_BITS, LEVELS, BLOCK_P)


def store_kv(k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor, cache) -> None:
    """k, v: [tokens, kv_heads, head_dim], last dim contiguous; slot_mapping: [tokens] int64 flat
    slots (block * block_size + offset, -1 to skip); cache: a PagedKVCache."""
    tokens, num_kv_heads, head_dim = k.shape
    if tokens == 0:
        return
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("store_kv needs the head dimension contiguous")
    _kv_store_kernel[(tokens, num_kv_heads)](
        k, v, slot_mapping, cache.k, cache.v, *cache.scale_tensors(),
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), num_kv_heads,
        HEAD_DIM=head_dim, KV_BITS=cache.kv_bits, LEVELS=(1 << cache.kv_bits) - 1,
        BLOCK_P=triton.next_power_of_2(head_dim // 2),
        num_warps=1 if head_dim <= 128 else 2, **launch_options(k.device))
