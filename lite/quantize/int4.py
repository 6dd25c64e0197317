"""The int4 weight format lite computes with: asymmetric 4-bit integers per group of input columns.

w ~ (q - zero) * scale with q and zero in 0..15 and one (scale, zero) per output row and group of
`group_size` consecutive input columns. Rows are output channels, so the rotary reorder of q/k rows
and the concatenation of q/k/v into one projection are plain row operations on all three tensors.
On-disk formats (AutoAWQ GEMM, GPTQ) pack these integers their own way: see `awq_format.py`.
Imports torch only: backends depend on this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

INT4_LEVELS = 15  # q in 0..15


@dataclass
class Int4Weight:
    qweight: torch.Tensor  # [out, in] uint8, one value 0..15 per byte
    scales: torch.Tensor  # [out, in / group_size] float
    zeros: torch.Tensor  # [out, in / group_size] uint8, 0..15: the q that stands for 0.0
    group_size: int

    def __post_init__(self):
        rows, cols = self.qweight.shape
        if cols % self.group_size or self.scales.shape != (rows, cols // self.group_size) \
                or self.zeros.shape != self.scales.shape:
            raise ValueError(f"int4 weight {tuple(self.qweight.shape)} with group size {self.group_size} "
                             f"has scales {tuple(self.scales.shape)} and zeros {tuple(self.zeros.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        rows, cols = self.shape
        q = self.qweight.view(rows, -1, self.group_size).to(dtype)
        w = (q - self.zeros.unsqueeze(-1).to(dtype)) * self.scales.unsqueeze(-1).to(dtype)
        return w.view(rows, cols)

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Int4Weight":
        """Apply one row operation (a permutation, a slice) to the integers, scales and zeros alike."""
        return Int4Weight(fn(self.qweight), fn(self.scales), fn(self.zeros), self.group_size)

    @staticmethod
    def cat(parts: list["Int4Weight"]) -> "Int4Weight":
        """Stack projections that share an input (q/k/v, gate/up) into one weight, rows in order."""
        if len({p.group_size for p in parts}) != 1:
            raise ValueError("merged projections must share one group size")
        return Int4Weight(torch.cat([p.qweight for p in parts]), torch.cat([p.scales for p in parts]),
                          torch.cat([p.zeros for p in parts]), parts[0].group_size)


def _group_ranges(groups: torch.Tensor, scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # groups: [..., group_size] -> scales, zeros: [...]. Min-max asymmetric over a range stretched
    # to include 0 (as GPTQ does; AutoAWQ does not), so that the integer zero point always lies in
    # 0..15 and a one-signed group is not clamped. The scale is rounded up to its storage dtype
    # first, so that q is the best choice for the stored scale and 15 steps still span the range.
    w_max, w_min = groups.amax(-1).clamp(min=0), groups.amin(-1).clamp(max=0)
    exact = (w_max - w_min).clamp(min=1e-5) / INT4_LEVELS
    stored = exact.to(scale_dtype)
    rounded_up = torch.nextafter(stored, torch.full_like(stored, float("inf")))
    scales = torch.where(stored.float() < exact, rounded_up, stored).float()
    zeros = (-torch.round(w_min / scales)).clamp_(0, INT4_LEVELS)
    return scales, zeros


def quantize_int4(weight: torch.Tensor, group_size: int,
                  scale_dtype: torch.dtype = torch.float16) -> Int4Weight:
    """Round-to-nearest int4 of a [out, in] weight: the last step of AWQ, and the RTN baseline."""
    rows, cols = weight.shape
    if cols % group_size:
        raise ValueError(f"group size {group_size} does not divide the input size {cols}")
    groups = weight.float().view(rows, -1, group_size)
    scales, zeros = _group_ranges(groups, scale_dtype)
    q = (torch.round(groups / scales.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp_(0, INT4_LEVELS)
    return Int4Weight(q.to(torch.uint8).view(rows, cols), scales.to(scale_dtype),
                      zeros.to(torch.uint8), group_size)


def fake_quantize_int4(weight: torch.Tensor, group_size: int,
                       scale_dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """quantize_int4 then dequantize, in float: what the searches compare against the original."""
    shape = weight.shape
    groups = weight.float().reshape(-1, group_size)
    scales, zeros = _group_ranges(groups, scale_dtype)
    scales, zeros = scales.unsqueeze(-1), zeros.unsqueeze(-1)
    q = (torch.round(groups / scales) + zeros).clamp_(0, INT4_LEVELS)
    return ((q - zeros) * scales).view(shape)
