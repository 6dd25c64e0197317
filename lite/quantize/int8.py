"""int8 weights per output channel: w ~ q * scale, q in -127..127, one float scale per row.

What a W4A16 model's output head runs as on backends with an int8 weight-only kernel: the head
is the largest matrix of a small model and stays unquantized in AWQ checkpoints, so in float it
would cost more bandwidth per decoded token than all the int4 layers together.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

INT8_MAX = 127


@dataclass
class Int8Weight:
    qweight: torch.Tensor  # [out, in] int8
    scales: torch.Tensor  # [out] float32

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.qweight.to(dtype) * self.scales.unsqueeze(1).to(dtype)


def quantize_int8_rows(weight: torch.Tensor) -> Int8Weight:
    """Symmetric round-to-nearest per output channel."""
    weight = weight.float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-8) / INT8_MAX
    q = torch.round(weight / scales.unsqueeze(1)).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return Int8Weight(q, scales)
