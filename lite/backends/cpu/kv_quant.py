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
    """One layer's cache, K and V side by side so that each step stores and reads both in one op.
    values: [2 (K, V), blocks, block_size, kv_heads, head_dim * bits / 8] uint8;
    scales: [2, blocks, block_size, kv_heads, 2 (scale, zero)] float32, per token and head."""
    bits: int
    values: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def allocate(cls, spec: KVCacheSpec) -> "QuantizedKVCache":
        rows = (2, spec.num_blocks, spec.block_size, spec.num_kv_heads)
        # Zero-filled like the float cache: padded reads of never-written slots stay finite.
        return cls(spec.kv_bits, torch.zeros(*rows, spec.head_dim * spec.kv_bits // 8, dtype=torch.uint8),
                   torch.zeros(*rows, 2, dtype=torch.float32))

    @property
    def block_size(self) -> int:
        return self.values.shape[2]

    def store(self, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [tokens, kv_heads, head_dim] written to flat slots block * block_size + offset."""
        q, scale, zero = reference.quantize_kv(torch.stack((k, v)), self.bits)  # [2, tokens, kv_heads, ...]
        self.values.view(2, -1, *self.values.shape[3:]).index_copy_(1, slot_mapping, q)
        self.scales.view(2, -1, *self.scales.shape[3:]).index_copy_(1, slot_mapping, torch.stack((scale, zero), -1))

    def gather(self, blocks: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized K and V of `blocks` (a 1-D tensor of block ids), each contiguous:
        [len(blocks), block_size, kv_heads, head_dim]."""
        scales = self.scales[:, blocks]
        kv = reference.dequantize_kv(self.values[:, blocks], scales[..., 0], scales[..., 1], self.bits, dtype)
        return kv[0], kv[1]

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
