"""Reading a tile of K or V rows out of the paged cache, dequantizing int8/int4 rows in registers."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def token_slots(block_table_ptr, positions, mask, BLOCK_SIZE: tl.constexpr):
    """Flat cache slots (int64) of a sequence's token positions through its block table row."""
    blocks = tl.load(block_table_ptr + positions // BLOCK_SIZE, mask=mask, other=0)
    return blocks.to(tl.int64) * BLOCK_SIZE + positions % BLOCK_SIZE


@triton.jit
def load_kv_tile(cache_ptr, scale_ptr, zero_ptr, slots, mask, kv_head, num_kv_heads, dims,
                 HEAD_DIM: tl.constexpr, KV_BITS: tl.constexpr):
    """[len(slots), len(dims)] rows of one kv head, in the cache dtype (float32 when dequantized);
    masked rows read as 0.
    cache: [blocks, block_size, kv_heads, HEAD_DIM * (KV_BITS or 16) / 8 ...] flat; scale/zero:
    [blocks, block_size, kv_heads] float32 when KV_BITS is 8 or 4."""
    rows = slots * num_kv_heads + kv_head
    mask2 = mask[:, None] & (dims[None, :] < HEAD_DIM)
    if KV_BITS == 0:
        tile = tl.load(cache_ptr + rows[:, None] * HEAD_DIM + dims[None, :], mask=mask2, other=0.0)
    else:
        if KV_BITS == 8:
            q = tl.load(cache_ptr + rows[:, None] * HEAD_DIM + dims[None, :], mask=mask2, other=0)
        else:  # two values per byte, the even index in the low nibble
            packed = tl.load(cache_ptr + rows[:, None] * (HEAD_DIM // 2) + dims[None, :] // 2, mask=mask2, other=0)
            q = (packed >> ((dims[None, :] % 2) * 4).to(tl.uint8)) & 0xF
        scale = tl.load(scale_ptr + rows, mask=mask, other=0.0)
        zero = tl.load(zero_ptr + rows, mask=mask, other=0.0)
        tile = q.to(tl.float32) * scale[:, None] + zero[:, None]
    return tile


@triton.jit
def load_context_tile(cache_ptr, scale_ptr, zero_ptr, new_ptr, new_token_stride, new_head_stride,
                      table, positions, mask, new_start, new_row0, kv_head, num_kv_heads, dims,
                      HEAD_DIM: tl.constexpr, KV_BITS: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    """K or V rows at a sequence's context `positions`, read from its blocks -- except, with an
    int8/int4 cache, this step's own tokens (positions >= new_start; row new_row0 + position -
    new_start of new: [tokens, kv_heads, head_dim]), which are read at full precision, as the CPU
    backend reads them: a token sees itself and its prompt exactly, earlier steps as stored."""
    if KV_BITS == 0:
        tile = load_kv_tile(cache_ptr, scale_ptr, zero_ptr, token_slots(table, positions, mask, BLOCK_SIZE),
                            mask, kv_head, num_kv_heads, dims, HEAD_DIM, KV_BITS)
    else:
        is_new = positions >= new_start
        cached = mask & (positions < new_start)
        tile = load_kv_tile(cache_ptr, scale_ptr, zero_ptr, token_slots(table, positions, cached, BLOCK_SIZE),
                            cached, kv_head, num_kv_heads, dims, HEAD_DIM, KV_BITS)
        rows = (new_row0 + positions - new_start).to(tl.int64)
        fresh = tl.load(new_ptr + rows[:, None] * new_token_stride + kv_head * new_head_stride + dims[None, :],
                        mask=(mask & is_new)[:, None] & (dims[None, :] < HEAD_DIM), other=0.0)
        tile = tl.where(is_new[:, None], fresh.to(tl.float32), tile)
    return tile
