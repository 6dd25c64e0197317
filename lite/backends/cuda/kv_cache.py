"""The CUDA backend's paged KV cache: one object per layer, stored in the model dtype or quantized."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lite.backends.base import KVCacheSpec


@dataclass
class PagedKVCache:
    """k, v: [blocks, block_size, kv_heads, head_dim] in the model dtype when kv_bits is 0, else
    [blocks, block_size, kv_heads, head_dim * kv_bits / 8] uint8 (int4: even index in the low
    nibble) with one float32 scale and zero per row, k_scale ... v_zero: [blocks, block_size, kv_heads];
    x ~ q * scale + zero, as `reference.quantize_kv` defines it."""
    k: torch.Tensor
    v: torch.Tensor
    kv_bits: int = 0
    k_scale: torch.Tensor | None = None
    k_zero: torch.Tensor | None = None
    v_scale: torch.Tensor | None = None
    v_zero: torch.Tensor | None = None

    @classmethod
    def allocate(cls, spec: KVCacheSpec, device: torch.device) -> "PagedKVCache":
        rows = (spec.num_blocks, spec.block_size, spec.num_kv_heads)
        if not spec.kv_bits:
            # Zero-filled: a padded decode row of a captured graph reads block 0 and must stay finite.
            return cls(torch.zeros(*rows, spec.head_dim, dtype=spec.dtype, device=device),
                       torch.zeros(*rows, spec.head_dim, dtype=spec.dtype, device=device))
        packed = (*rows, spec.head_dim * spec.kv_bits // 8)
        return cls(torch.zeros(packed, dtype=torch.uint8, device=device),
                   torch.zeros(packed, dtype=torch.uint8, device=device), spec.kv_bits,
                   *(torch.zeros(rows, dtype=torch.float32, device=device) for _ in range(4)))

    @property
    def block_size(self) -> int:
        return self.k.shape[1]

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[2]

    def scale_tensors(self) -> tuple[torch.Tensor, ...]:
        """(k_scale, k_zero, v_scale, v_zero); unquantized caches pass k four times as unused pointers."""
        if not self.kv_bits:
            return (self.k,) * 4
        return self.k_scale, self.k_zero, self.v_scale, self.v_zero
