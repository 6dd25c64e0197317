"""int4 checkpoints on disk: the AutoAWQ GEMM layout lite writes, and the AWQ/GPTQ layouts it reads.

AutoAWQ GEMM (quant_method "awq", version "gemm"), per quantized linear `<module>`:
  qweight [in, out / 8] int32: 8 output columns per int32, nibble i holding column AWQ_PACK_ORDER[i]
  qzeros  [in / group, out / 8] int32, packed the same way
  scales  [in / group, out] float16
GPTQ (quant_method "gptq"): qweight [in / 8, out] int32 with 8 consecutive input rows per int32
(nibble i = row i), qzeros [in / group, out / 8] packed in plain column order and, in the original
"gptq" format, storing zero - 1; g_idx [in] maps each input row to its group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from lite.quantize.int4 import Int4Weight

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
PLAIN_ORDER = tuple(range(8))
NIBBLE_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)
INT4_PARTS = ("qweight", "qzeros", "scales", "g_idx")


class UnsupportedCheckpoint(ValueError):
    """A quantized checkpoint whose format lite cannot run; the message names the setting."""


@dataclass(frozen=True)
class Int4Checkpoint:
    method: str  # "awq" | "gptq"
    zero_offset: int  # added to stored zeros: 1 for GPTQ's original format, which stores zero - 1


def read_int4_checkpoint(hf_config: dict) -> Int4Checkpoint | None:
    """The quantization_config of config.json, validated; None for an unquantized model."""
    qc = hf_config.get("quantization_config")
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method not in ("awq", "gptq"):
        raise UnsupportedCheckpoint(f"quant_method {method!r} is not supported (lite reads awq and gptq "
                                    "int4 checkpoints); use the unquantized model or convert it with `lite convert`")
    bits = qc.get("bits", qc.get("w_bit"))
    if bits != 4:
        raise UnsupportedCheckpoint(f"{method} checkpoints with {bits} bits are not supported (only 4)")
    if method == "awq":
        version = str(qc.get("version", "gemm")).lower()
        if version != "gemm":
            raise UnsupportedCheckpoint(f"AWQ version {version!r} is not supported (only the gemm layout)")
        if qc.get("zero_point", True) is False:
            raise UnsupportedCheckpoint("AWQ without zero points is not supported")
        return Int4Checkpoint("awq", 0)
    layout = str(qc.get("checkpoint_format", "gptq")).lower()
    if layout not in ("gptq", "gptq_v2"):
        raise UnsupportedCheckpoint(f"GPTQ checkpoint_format {layout!r} is not supported (gptq, gptq_v2)")
    return Int4Checkpoint("gptq", 1 if layout == "gptq" else 0)


def awq_quantization_config(group_size: int) -> dict:
    """The config.json entry AutoAWQ writes and transformers/vLLM read."""
    return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
            "version": "gemm", "modules_to_not_convert": None}


def _pack_columns(values: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    # values: [rows, cols] ints 0..15 -> [rows, cols / 8] int32; nibble i holds column order[i] of 8.
    rows, cols = values.shape
    if cols % 8:
        raise ValueError(f"int4 packing needs a multiple of 8 columns, got {cols}")
    chunks = values.to(torch.int32).view(rows, cols // 8, 8)[..., list(order)]
    packed = torch.zeros(rows, cols // 8, dtype=torch.int32)
    for i in range(8):
        packed |= chunks[..., i] << (4 * i)
    return packed


def _unpack_columns(packed: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    # packed: [rows, cols / 8] int32 -> [rows, cols] uint8
    nibbles = (packed.to(torch.int32).unsqueeze(-1) >> NIBBLE_SHIFTS) & 0xF  # [rows, cols / 8, 8]
    inverse = sorted(range(8), key=lambda i: order[i])  # column j sits in nibble inverse[j]
    return nibbles[..., inverse].flatten(1).to(torch.uint8)


def pack_awq(weight: Int4Weight) -> dict[str, torch.Tensor]:
    """Int4Weight [out, in] -> the AutoAWQ GEMM tensors of one linear (without the module prefix)."""
    return {"qweight": _pack_columns(weight.qweight.t(), AWQ_PACK_ORDER),
            "qzeros": _pack_columns(weight.zeros.t(), AWQ_PACK_ORDER),
            "scales": weight.scales.t().to(torch.float16).contiguous()}


def unpack_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> Int4Weight:
    q = _unpack_columns(qweight, AWQ_PACK_ORDER).t().contiguous()
    zeros = _unpack_columns(qzeros, AWQ_PACK_ORDER).t().contiguous()
    return Int4Weight(q, scales.t().contiguous(), zeros, q.shape[1] // scales.shape[0])


def unpack_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                g_idx: torch.Tensor | None, zero_offset: int) -> Int4Weight:
    rows8, cols = qweight.shape
    # nibble i of row r is input row 8r + i
    q = ((qweight.to(torch.int32).unsqueeze(1) >> NIBBLE_SHIFTS.view(1, 8, 1)) & 0xF).reshape(rows8 * 8, cols)
    in_features, num_groups = rows8 * 8, scales.shape[0]
    group_size = in_features // num_groups
    if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(in_features) // group_size):
        raise UnsupportedCheckpoint("GPTQ act-order (desc_act) checkpoints, whose g_idx reorders the "
                                    "input rows, are not supported; use one quantized with desc_act=False")
    zeros = (_unpack_columns(qzeros, PLAIN_ORDER)[:, :cols].int() + zero_offset) & 0xF
    return Int4Weight(q.t().to(torch.uint8).contiguous(), scales.t().contiguous(),
                      zeros.t().to(torch.uint8).contiguous(), group_size)


def int4_weights(tensors: Iterable[tuple[str, torch.Tensor]],
                 fmt: Int4Checkpoint) -> Iterator[tuple[str, torch.Tensor | Int4Weight]]:
    """Turn a checkpoint's (name, tensor) stream into one ('<module>.weight', Int4Weight) per
    quantized linear, passing every other tensor through. A module's parts may span shards."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    needed = {"qweight", "qzeros", "scales"} | ({"g_idx"} if fmt.method == "gptq" else set())
    for name, tensor in tensors:
        module, _, part = name.rpartition(".")
        if part not in INT4_PARTS:
            yield name, tensor
            continue
        parts = pending.setdefault(module, {})
        parts[part] = tensor
        if needed <= parts.keys():
            yield f"{module}.weight", _unpack(pending.pop(module), fmt)
    for module, parts in pending.items():  # GPTQ checkpoints without g_idx end here
        missing = {"qweight", "qzeros", "scales"} - parts.keys()
        if missing:
            raise ValueError(f"quantized layer {module} lacks {', '.join(sorted(missing))} in the checkpoint")
        yield f"{module}.weight", _unpack(parts, fmt)


def _unpack(parts: dict[str, torch.Tensor], fmt: Int4Checkpoint) -> Int4Weight:
    if fmt.method == "awq":
        return unpack_awq(parts["qweight"], parts["qzeros"], parts["scales"])
    return unpack_gptq(parts["qweight"], parts["qzeros"], parts["scales"], parts.get("g_idx"),
                       fmt.zero_offset)
