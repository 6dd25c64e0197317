"""The int4 layouts written out longhand from their definitions, independently of lite's code:
the oracle that lite's AutoAWQ writer and AWQ/GPTQ readers are checked against."""
import torch

from lite.quantize.int4 import Int4Weight

AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]  # AutoAWQ's unpacking order of the 8 nibbles


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    return ((packed.unsqueeze(-1) >> shifts) & 0xF).flatten(-2)


def autoawq_dequantize(qweight, qzeros, scales) -> torch.Tensor:
    """AutoAWQ's GEMM dequantization: unpack, undo its nibble order, (q - z) * s; -> [out, in]."""
    order = torch.arange(qweight.shape[1] * 8).view(-1, 8)[:, AWQ_REVERSE_ORDER].flatten()
    q, z = unpack_nibbles(qweight)[:, order], unpack_nibbles(qzeros)[:, order]
    group = q.shape[0] // scales.shape[0]
    return ((q - z.repeat_interleave(group, 0)) * scales.float().repeat_interleave(group, 0)).t().contiguous()


def gptq_dequantize(qweight, qzeros, scales, zero_offset=1) -> torch.Tensor:
    """GPTQ: 8 consecutive input rows per int32, zeros stored minus zero_offset; -> [out, in]."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    q = ((qweight.unsqueeze(1) >> shifts.view(1, 8, 1)) & 0xF).reshape(-1, qweight.shape[1])  # [in, out]
    z = (unpack_nibbles(qzeros) + zero_offset) & 0xF
    group = q.shape[0] // scales.shape[0]
    return ((q - z.repeat_interleave(group, 0)) * scales.float().repeat_interleave(group, 0)).t().contiguous()


def pack_gptq(weight: Int4Weight, zero_offset: int) -> dict:
    """The GPTQ layout written out longhand: 8 consecutive input rows per int32, zeros minus 1."""
    q = weight.qweight.t().to(torch.int64)  # [in, out]
    qweight = torch.zeros(q.shape[0] // 8, q.shape[1], dtype=torch.int64)
    for i in range(8):
        qweight |= q[i::8] << (4 * i)
    zeros = (weight.zeros.t().to(torch.int64) - zero_offset) & 0xF  # [in/g, out]
    qzeros = torch.zeros(zeros.shape[0], zeros.shape[1] // 8, dtype=torch.int64)
    for i in range(8):
        qzeros |= zeros[:, i::8] << (4 * i)
    as_int32 = lambda t: torch.where(t >= 2**31, t - 2**32, t).to(torch.int32)  # noqa: E731
    g_idx = torch.arange(q.shape[0], dtype=torch.int32) // weight.group_size
    return {"qweight": as_int32(qweight), "qzeros": as_int32(qzeros), "scales": weight.scales.t().contiguous(),
            "g_idx": g_idx}
