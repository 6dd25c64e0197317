"""The CPU backend's int8/int4 KV cache: quantized on store, dequantized when attention reads it.

Each new K/V row (one token, one head) is quantized on its own (`reference.quantize_kv`:
asymmetric, scale and zero per row), so no calibration is needed and a row never changes once
written. Attention reads only the blocks a step needs and dequantizes them into the model's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from lite.backends import reference
from lite.backends.base import KVCacheSpec


@dataclass
class QuantizedKVCache:
    """One layer's cache. k, v: [blocks, block_size, kv_heads, head_dim * bits / 8] uint8;
    k_scale, k_zero, v_scale, v_zero: [blocks, block_size, kv_heads] float32."""
    bits: int
    k: torch.Tensor
    v: torch.Tensor
    k_scale: torch.Tensor
    k_zero: torch.Tensor
    v_scale: torch.Tensor
    v_zero: torch.Tensor

    @classmethod
    def allocate(cls, spec: KVCacheSpec) -> "QuantizedKVCache":
        rows = (spec.num_blocks, spec.block_size, spec.num_kv_heads)
        packed = (*rows, spec.head_dim * spec.kv_bits // 8)
        # Zero-filled like the float cache: padded reads of never-written slots stay finite.
        return cls(spec.kv_bits, torch.zeros(packed, dtype=torch.uint8), torch.zeros(packed, dtype=torch.uint8),
                   *(torch.zeros(rows, dtype=torch.float32) for _ in range(4)))

    @property
    def block_size(self) -> int:
        return self.k.shape[1]

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[2]

    def store(self, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [tokens, kv_heads, head_dim] written to flat slots block * block_size + offset."""
        for new, q_cache, scale_cache, zero_cache in ((k, self.k, self.k_scale, self.k_zero),
                                                      (v, self.v, self.v_scale, self.v_zero)):
            q, scale, zero = reference.quantize_kv(new, self.bits)
            q_cache.view(-1, *q_cache.shape[2:]).index_copy_(0, slot_mapping, q)
            scale_cache.view(-1, self.num_kv_heads).index_copy_(0, slot_mapping, scale)
            zero_cache.view(-1, self.num_kv_heads).index_copy_(0, slot_mapping, zero)

    def gather(self, blocks: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized K and V of `blocks` (any shape of block ids):
        [*blocks.shape, block_size, kv_heads, head_dim] each."""
        keys = reference.dequantize_kv(self.k[blocks], self.k_scale[blocks], self.k_zero[blocks],
                                       self.bits, dtype)
        values = reference.dequantize_kv(self.v[blocks], self.v_scale[blocks], self.v_zero[blocks],
                                         self.bits, dtype)
        return keys, values

    def dequantized_view(self, k: torch.Tensor, v: torch.Tensor, metadata):
        """Store this step's K/V quantized, then return ((k_cache, v_cache), metadata) for a float
        copy of only the blocks the step touches, with the metadata's block ids and slots renumbered
        into it, so attention runs unchanged. The step's own new K/V are then written into the
        copy at full precision: new tokens see themselves exactly and earlier tokens as stored."""
        self.store(metadata.slot_mapping, k, v)
        if metadata.dequantize_plan is None:  # the same for every layer of a step: build it once
            metadata.dequantize_plan = _plan(metadata, self.block_size)
        block_ids, renumbered = metadata.dequantize_plan
        return self.gather(block_ids, k.dtype), renumbered


def _plan(metadata, block_size: int):
    """(sorted ids of the blocks a step reads or writes, the step's metadata renumbered into them)."""
    touched = [metadata.slot_mapping // block_size]
    if metadata.decode_blocks is not None:
        touched.append(metadata.decode_blocks.flatten())
    touched += [span.prefix_blocks for span in metadata.prefills if span.prefix_blocks is not None]
    block_ids = torch.unique(torch.cat(touched))  # sorted

    def renumber(blocks: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(block_ids, blocks)

    slots = metadata.slot_mapping
    renumbered = replace(
        metadata, slot_mapping=renumber(slots // block_size) * block_size + slots % block_size,
        decode_blocks=None if metadata.decode_blocks is None else renumber(metadata.decode_blocks),
        prefills=[span if span.prefix_blocks is None else replace(span, prefix_blocks=renumber(span.prefix_blocks))
                  for span in metadata.prefills])
    return block_ids, renumbered
