"""Paged attention for the CUDA backend: Triton KV store, split-K decode and varlen prefill."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lite.backends.base import AttentionOps, BatchLayout
from lite.backends.cuda.host import upload
from lite.backends.cuda.kernels.decode_attention import decode_attention, num_decode_splits
from lite.backends.cuda.kernels.kv_store import store_kv
from lite.backends.cuda.kernels.prefill_attention import prefill_attention
from lite.backends.cuda.kv_cache import PagedKVCache


@dataclass
class DecodeBatch:
    block_tables: torch.Tensor  # [decodes, width] int64, unused columns 0
    context_lens: torch.Tensor  # [decodes] int64
    max_context_len: int  # sizes the split-K grid; a captured graph uses max_model_len


@dataclass
class PrefillBatch:
    query_starts: torch.Tensor  # [prefills + 1] int64: row offsets within the prefill rows
    context_lens: torch.Tensor  # [prefills] int64
    block_tables: torch.Tensor  # [prefills, width] int64
    max_query_len: int


@dataclass
class CUDAAttentionMetadata:
    slot_mapping: torch.Tensor  # [tokens] int64, -1 = do not store (graph padding)
    num_decodes: int
    decode: DecodeBatch | None
    prefill: PrefillBatch | None


def block_table_array(tables: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(tables), width), dtype=np.int64)
    for row, table in enumerate(tables):
        used = table[:width]
        out[row, :len(used)] = used
    return out


class CUDAAttention(AttentionOps):
    """KV cache per layer: a PagedKVCache ([blocks, block_size, kv_heads, head_dim] K and V)."""

    def __init__(self, device: torch.device, num_sms: int):
        self.device = device
        self.num_sms = num_sms

    def build_metadata(self, layout: BatchLayout) -> CUDAAttentionMetadata:
        n = layout.num_decodes
        bs = layout.block_size
        prefill_lens = layout.query_lens[n:]
        # Everything goes over in one host-to-device copy of one int64 array (the graphs' dtype too,
        # so the kernels compile once), then is sliced.
        parts = [np.asarray(layout.slot_mapping, dtype=np.int64)]
        decode_width = prefill_width = 0
        if n:
            decode_width = -(-max(layout.context_lens[:n]) // bs)
            parts += [block_table_array(layout.block_tables[:n], decode_width).ravel(),
                      np.asarray(layout.context_lens[:n], dtype=np.int64)]
        if prefill_lens:
            prefill_width = -(-max(layout.context_lens[n:]) // bs)
            parts += [np.concatenate(([0], np.cumsum(prefill_lens))).astype(np.int64),
                      np.asarray(layout.context_lens[n:], dtype=np.int64),
                      block_table_array(layout.block_tables[n:], prefill_width).ravel()]
        flat = upload(np.concatenate(parts), self.device)
        pieces = iter(flat.split([len(p) for p in parts]))
        slot_mapping = next(pieces)
        decode = prefill = None
        if n:
            tables, context_lens = next(pieces).view(n, decode_width), next(pieces)
            decode = DecodeBatch(tables, context_lens, max(layout.context_lens[:n]))
        if prefill_lens:
            starts, context_lens, tables = next(pieces), next(pieces), next(pieces)
            prefill = PrefillBatch(starts, context_lens, tables.view(len(prefill_lens), prefill_width),
                                   max(prefill_lens))
        return CUDAAttentionMetadata(slot_mapping, n, decode, prefill)

    def forward(self, q, k, v, kv_cache: PagedKVCache, metadata: CUDAAttentionMetadata, scale: float,
                rope: torch.Tensor | None = None):
        # q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim]; views of the qkv output,
        # q and k rotated in place by the store.
        store_kv(k, v, metadata.slot_mapping, kv_cache, q=q, rope=rope)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        n = metadata.num_decodes
        if metadata.decode is not None:
            d = metadata.decode
            splits = num_decode_splits(n, kv_cache.num_kv_heads, d.max_context_len, self.num_sms)
            decode_attention(q[:n], k[:n], v[:n], kv_cache, d.block_tables, d.context_lens, scale, splits, out[:n])
        if metadata.prefill is not None:
            p = metadata.prefill
            prefill_attention(q[n:], k[n:], v[n:], kv_cache, p.block_tables, p.query_starts, p.context_lens,
                              p.max_query_len, scale, out[n:])
        return out
