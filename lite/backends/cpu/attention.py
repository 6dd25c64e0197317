"""Paged attention for the CPU backend, on PyTorch's scaled_dot_product_attention."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lite.backends import reference
from lite.backends.base import AttentionOps, BatchLayout
from lite.backends.cpu.kv_quant import QuantizedKVCache


def _rotated(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Float32 x rotated by one complex multiply on its own storage (a view of the qkv output)."""
    if x.dtype != torch.float32:
        return reference.rotary(x, rope)
    torch.view_as_complex(x.view(*x.shape[:-1], -1, 2)).mul_(rope.unsqueeze(1))
    return x


@dataclass
class PrefillSpan:
    start: int  # first row of this sequence's queries in the batch
    query_len: int
    context_len: int
    prefix_blocks: torch.Tensor | None  # block ids when part of the context was cached earlier
    mask: torch.Tensor | None  # [query_len, context_len] bool, True = may attend


@dataclass
class CPUAttentionMetadata:
    slot_mapping: torch.Tensor  # [tokens]
    num_decodes: int
    decode_blocks: torch.Tensor | None  # [decodes, max_blocks], padded with block 0
    decode_context_len: int  # keys to read per decode: the longest context (padded ones masked)
    decode_mask: torch.Tensor | None  # [decodes, 1, 1, decode_context_len]; None when all equal
    decode_context_lens: torch.Tensor | None  # [decodes]
    prefills: list[PrefillSpan]
    dequantize_plan: Any = None  # int8/int4 caches: filled by kv_quant at the step's first layer


class CPUAttention(AttentionOps):
    """KV cache per layer: (k, v), each [blocks, block_size, kv_heads, head_dim], zero-filled so
    padded reads of never-written slots stay finite under the mask.

    Decode uses the C++ paged kernel when it is built (float32), which reads K/V in place (an
    int8/int4 cache dequantized row by row); the PyTorch path gathers each sequence's blocks into a
    padded copy first."""

    def __init__(self, decode_kernel=None):
        self.decode_kernel = decode_kernel

    def build_metadata(self, layout: BatchLayout) -> CPUAttentionMetadata:
        num_decodes = layout.num_decodes
        decode_blocks = decode_mask = decode_lens = None
        decode_len = 0
        if num_decodes:
            lens = layout.context_lens[:num_decodes]
            decode_len = max(lens)
            width = -(-decode_len // layout.block_size)
            decode_blocks = torch.tensor(
                [t[:width] + [0] * (width - len(t[:width])) for t in layout.block_tables[:num_decodes]],
                dtype=torch.long)
            decode_lens = torch.tensor(lens, dtype=torch.long)
            if min(lens) != decode_len:
                decode_mask = (torch.arange(decode_len).unsqueeze(0)
                               < torch.tensor(lens).unsqueeze(1)).view(num_decodes, 1, 1, decode_len)
        prefills, start = [], num_decodes
        for i in range(num_decodes, len(layout.query_lens)):
            q_len, ctx_len = layout.query_lens[i], layout.context_lens[i]
            prefix_blocks = mask = None
            if ctx_len > q_len:
                num_blocks = -(-ctx_len // layout.block_size)
                prefix_blocks = torch.tensor(layout.block_tables[i][:num_blocks], dtype=torch.long)
                query_pos = torch.arange(ctx_len - q_len, ctx_len).unsqueeze(1)
                mask = torch.arange(ctx_len).unsqueeze(0) <= query_pos
            prefills.append(PrefillSpan(start, q_len, ctx_len, prefix_blocks, mask))
            start += q_len
        return CPUAttentionMetadata(
            slot_mapping=torch.tensor(layout.slot_mapping, dtype=torch.long),
            num_decodes=num_decodes, decode_blocks=decode_blocks, decode_context_len=decode_len,
            decode_mask=decode_mask, decode_context_lens=decode_lens, prefills=prefills)

    def forward(self, q, k, v, kv_cache, metadata: CPUAttentionMetadata, scale: float, rope=None):
        if rope is not None:
            q, k = _rotated(q, rope), _rotated(k, rope)
        if isinstance(kv_cache, QuantizedKVCache):
            if not metadata.prefills and self.decode_kernel is not None and q.dtype == torch.float32:
                # Decodes only: the C++ kernel dequantizes each cached row as it reads it.
                kv_cache.store(metadata.slot_mapping, k, v)
                return self.decode_kernel.paged_decode_quantized(
                    q, kv_cache.values, kv_cache.scales, metadata.decode_blocks, metadata.decode_context_lens,
                    scale, kv_cache.bits, k, v)
            # Steps with prefills attend over a float copy of the blocks they touch.
            kv_cache, metadata = kv_cache.dequantized_view(k, v, metadata)
        k_cache, v_cache = kv_cache
        _, block_size, num_kv_heads, head_dim = k_cache.shape
        k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, metadata.slot_mapping, k)
        v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, metadata.slot_mapping, v)
        num_heads = q.shape[1]
        group = num_heads // num_kv_heads
        parts = []
        n = metadata.num_decodes
        if n and self.decode_kernel is not None and q.dtype == torch.float32:
            parts.append(self.decode_kernel.paged_decode(
                q[:n], k_cache, v_cache, metadata.decode_blocks, metadata.decode_context_lens, scale))
        elif n:
            length = metadata.decode_context_len
            # Each kv head's `group` query heads ride in the query-length dim: no K/V copy per head.
            keys = k_cache[metadata.decode_blocks].view(n, -1, num_kv_heads, head_dim)[:, :length]
            values = v_cache[metadata.decode_blocks].view(n, -1, num_kv_heads, head_dim)[:, :length]
            attn = F.scaled_dot_product_attention(
                q[:n].view(n, num_kv_heads, group, head_dim), keys.transpose(1, 2),
                values.transpose(1, 2), attn_mask=metadata.decode_mask, scale=scale)
            parts.append(attn.view(n, num_heads, head_dim))
        for span in metadata.prefills:
            rows = slice(span.start, span.start + span.query_len)
            if span.prefix_blocks is None:
                keys, values = k[rows], v[rows]
            else:
                keys = k_cache[span.prefix_blocks].flatten(0, 1)[:span.context_len]
                values = v_cache[span.prefix_blocks].flatten(0, 1)[:span.context_len]
            # 4-D inputs: PyTorch's CPU flash-attention kernel takes only those (3-D falls back
            # to the math path, which materializes the whole score matrix).
            attn = F.scaled_dot_product_attention(
                q[rows].transpose(0, 1).unsqueeze(0),
                keys.transpose(0, 1).repeat_interleave(group, dim=0).unsqueeze(0),
                values.transpose(0, 1).repeat_interleave(group, dim=0).unsqueeze(0),
                attn_mask=span.mask, is_causal=span.mask is None, scale=scale)
            parts.append(attn[0].transpose(0, 1))
        return parts[0] if len(parts) == 1 else torch.cat(parts)
