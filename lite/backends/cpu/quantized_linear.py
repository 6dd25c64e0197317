"""W4A16 (and W8A16) linears on the CPU: PyTorch's int4/int8 weight-only matmuls.

Decoding reads every weight once per token, so a quarter of the bytes of bfloat16 (an eighth of
float32) is the speed-up; the kernel unpacks 4-bit weights in registers. It is vectorized (AVX512 /
AVX2) for bfloat16 activations only, its float32 path being a scalar loop about ten times slower,
so activations go in as bfloat16 and come back in the model's dtype: "A16" is 16-bit activations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lite.backends import reference
from lite.quantize.int4 import Int4Weight
from lite.quantize.int8 import Int8Weight

KERNEL_GROUP_SIZES = (32, 64, 128, 256)
KERNEL_ROW_MULTIPLE = 16  # output features must be a multiple of this for the packing op
# Only the CPU packing ignores innerKTiles; the CUDA variant of the op wants 2, 4 or 8.
INNER_K_TILES = 2
INT8_KERNEL_ROWS = 16


@dataclass
class CPUInt4Weight:
    packed: torch.Tensor  # [out, in / 2] uint8 in the kernel's own interleaved layout
    scales_and_zeros: torch.Tensor  # [in / group, out, 2] bfloat16: w = (q - 8) * scale + zero
    group_size: int
    in_features: int
    out_features: int


def supports_kernel(weight: Int4Weight) -> bool:
    out_features, in_features = weight.shape
    return (weight.group_size in KERNEL_GROUP_SIZES and out_features % KERNEL_ROW_MULTIPLE == 0
            and in_features % weight.group_size == 0)


def prepare_w4a16(weight: Int4Weight) -> CPUInt4Weight | Int4Weight:
    if not supports_kernel(weight):
        return reference.prepare_w4a16(weight)  # any shape, at dequantize-per-call speed
    out_features, in_features = weight.shape
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(weight.qweight.to(torch.int32), INNER_K_TILES)
    scales = weight.scales.float()
    # The kernel centres q on 8 and adds a float offset: (q - z) * s == (q - 8) * s + (8 - z) * s.
    offsets = (8 - weight.zeros.float()) * scales
    scales_and_zeros = torch.stack((scales, offsets), dim=-1).transpose(0, 1).contiguous()
    return CPUInt4Weight(packed, scales_and_zeros.to(torch.bfloat16), weight.group_size,
                         in_features, out_features)


def linear_w4a16(x: torch.Tensor, weight: CPUInt4Weight | Int4Weight,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(weight, CPUInt4Weight):
        return reference.linear_w4a16(x, weight, bias)
    rows = x.reshape(-1, weight.in_features).to(torch.bfloat16).contiguous()
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, weight.packed, weight.group_size,
                                                     weight.scales_and_zeros).to(x.dtype)
    if bias is not None:
        out += bias
    return out.view(*x.shape[:-1], weight.out_features)


def prepare_w8a16(weight: torch.Tensor) -> Int8Weight:
    int8 = reference.prepare_w8a16(weight)
    return Int8Weight(int8.qweight, int8.scales.to(torch.bfloat16))


def linear_w8a16(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch's int8 weight-only matmul, vectorized for bfloat16 activations like the int4 one.
    Past ~16 rows at a time it slows sharply, so longer inputs go through in chunks."""
    rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    out = torch.cat([torch.ops.aten._weight_int8pack_mm(chunk.contiguous(), weight.qweight, weight.scales)
                     for chunk in rows.split(INT8_KERNEL_ROWS)]).to(x.dtype)
    if bias is not None:
        out += bias
    return out.view(*x.shape[:-1], -1)
