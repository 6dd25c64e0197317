"""Write new K/V rows into their paged-cache slots; with int8/int4 KV, quantize each row on the way in.
Given the step's rotary phasors, the same kernel first rotates q and k in place: at batch 1 a
separate rotary kernel between the qkv projection and the store cost ~4.6 us a layer on an H100
(one more link in the chain of dependent small kernels, benchmarks/NOTES.md), ~5% of a W4A16 step."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs


@triton.jit
def _store_pairs(even, odd, pairs, mask, dst_ptr, scale_ptr, zero_ptr, slot, head, num_kv_heads,
                 HEAD_DIM: tl.constexpr, KV_BITS: tl.constexpr, LEVELS: tl.constexpr):
    # A row as (even, odd) element pairs, so that int4 can pack a pair into one byte.
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
def _rotated(ptr, cos, sin, pairs, mask):
    # The row at ptr rotated in place; returns its (even, odd) pairs, rotated.
    even = tl.load(ptr + 2 * pairs, mask=mask, other=0.0)
    odd = tl.load(ptr + 2 * pairs + 1, mask=mask, other=0.0)
    even_f, odd_f = even.to(tl.float32), odd.to(tl.float32)
    even = (even_f * cos - odd_f * sin).to(even.dtype)
    odd = (even_f * sin + odd_f * cos).to(odd.dtype)
    tl.store(ptr + 2 * pairs, even, mask=mask)
    tl.store(ptr + 2 * pairs + 1, odd, mask=mask)
    return even, odd


@triton.jit
def _kv_store_kernel(q_ptr, k_ptr, v_ptr, freqs_ptr, slot_ptr, k_cache_ptr, v_cache_ptr,
                     k_scale_ptr, k_zero_ptr, v_scale_ptr, v_zero_ptr, q_token_stride, q_head_stride,
                     k_token_stride, k_head_stride, v_token_stride, v_head_stride, num_heads, num_kv_heads,
                     ROTATE: tl.constexpr, HEAD_DIM: tl.constexpr, KV_BITS: tl.constexpr, LEVELS: tl.constexpr,
                     BLOCK_P: tl.constexpr, USE_PDL: tl.constexpr):
    # Grid: (tokens, kv_heads, or heads + kv_heads with ROTATE). q, k, v: [tokens, heads, head_dim]
    # (strided views of the qkv output); freqs: [tokens, HEAD_DIM / 2, 2] float32 (cos, sin).
    # With ROTATE the first `num_heads` programs of a token rotate its q heads, the rest its k
    # heads (written back, for attention over this step's rows) before storing k and v.
    wait_for_inputs(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    pairs = tl.arange(0, BLOCK_P)
    mask = pairs < HEAD_DIM // 2
    if ROTATE:
        cos = tl.load(freqs_ptr + row * HEAD_DIM + 2 * pairs, mask=mask, other=1.0)
        sin = tl.load(freqs_ptr + row * HEAD_DIM + 2 * pairs + 1, mask=mask, other=0.0)
    else:  # no q programs then: the rotation below never runs
        cos = tl.full((BLOCK_P,), 1.0, tl.float32)
        sin = tl.zeros((BLOCK_P,), tl.float32)
    if head < num_heads:
        _rotated(q_ptr + row * q_token_stride + head * q_head_stride, cos, sin, pairs, mask)
    else:
        head -= num_heads
        k_row = k_ptr + row * k_token_stride + head * k_head_stride
        if ROTATE:
            k_even, k_odd = _rotated(k_row, cos, sin, pairs, mask)
        else:
            k_even = tl.load(k_row + 2 * pairs, mask=mask, other=0.0)
            k_odd = tl.load(k_row + 2 * pairs + 1, mask=mask, other=0.0)
        slot = tl.load(slot_ptr + row).to(tl.int64)
        if slot >= 0:  # -1: a padded row of a captured decode graph, nothing to store
            _store_pairs(k_even, k_odd, pairs, mask, k_cache_ptr, k_scale_ptr, k_zero_ptr, slot, head,
                         num_kv_heads, HEAD_DIM, KV_BITS, LEVELS)
            v_row = v_ptr + row * v_token_stride + head * v_head_stride
            _store_pairs(tl.load(v_row + 2 * pairs, mask=mask, other=0.0),
                         tl.load(v_row + 2 * pairs + 1, mask=mask, other=0.0), pairs, mask, v_cache_ptr,
                         v_scale_ptr, v_zero_ptr, slot, head, num_kv_heads, HEAD_DIM, KV_BITS, LEVELS)


def store_kv(k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor, cache, q: torch.Tensor | None = None,
             rope: torch.Tensor | None = None) -> None:
    """k, v: [tokens, kv_heads, head_dim], last dim contiguous; slot_mapping: [tokens] int64 flat
    slots (block * block_size + offset, -1 to skip); cache: a PagedKVCache. With rope
    ([tokens, head_dim / 2] complex64 phasors) q [tokens, heads, head_dim] and k are first rotated
    in place (interleaved pairs, as reference.rotary)."""
    tokens, num_kv_heads, head_dim = k.shape
    if tokens == 0:
        return
    if k.stride(-1) != 1 or v.stride(-1) != 1 or (q is not None and q.stride(-1) != 1):
        raise ValueError("store_kv needs the head dimension contiguous")
    rotate = rope is not None
    q = q if rotate else k
    freqs = torch.view_as_real(rope.contiguous()) if rotate else k
    num_heads = q.shape[1] if rotate else 0
    _kv_store_kernel[(tokens, num_heads + num_kv_heads)](
        q, k, v, freqs, slot_mapping, cache.k, cache.v, *cache.scale_tensors(), q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), num_heads, num_kv_heads,
        ROTATE=rotate, HEAD_DIM=head_dim, KV_BITS=cache.kv_bits, LEVELS=(1 << cache.kv_bits) - 1,
        BLOCK_P=triton.next_power_of_2(head_dim // 2),
        num_warps=1 if head_dim <= 128 else 2, **launch_options(k.device))
