"""W4A16 linears: int4 weights in the AutoAWQ groups lite converts to, 16-bit activations.

Decode reads every weight once per step, so at batch 1 what matters is streaming the packed
int4 bytes at full bandwidth: a GEMV (int4_gemv_gluon.py, or int4_gemv_triton.py where Triton has
no Gluon). A few rows (batched decode) go through a skinny GEMM that dequantizes tiles in
registers for tl.dot; prefill-sized batches dequantize the weight once per call and use cuBLAS,
where the matmul, not the read, sets the pace.
16-bit linears are gemv.py's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from lite.backends.cuda.kernels import activation, int4_gemv_triton
from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs
from lite.quantize.int4 import Int4Weight


@dataclass
class CUDAInt4Weight:
    packed: torch.Tensor  # [out, in / 2] uint8: input column 2j in the low nibble of byte j, 2j + 1 high
    scales: torch.Tensor  # [out, in / group_size], the checkpoint's float dtype
    zeros: torch.Tensor  # [out, in / group_size] uint8: w = (q - zero) * scale
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], self.packed.shape[1] * 2


@triton.jit
def _int4_skinny_gemm_kernel(x_ptr, w_ptr, scales_ptr, zeros_ptr, bias_ptr, out_ptr, M, N, K, x_stride,
                             GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr):
    # out[M, N] = x[M, K] @ W[N, K]^T for M <= 16, x rows past M zero padding for tl.dot.
    # The even and odd input columns meet the low and high nibbles in two dots of K / 2, so the
    # nibbles are never interleaved back in registers. BLOCK_K divides GROUP.
    wait_for_inputs(USE_PDL)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, 16)
    row_mask = rows < N
    half = tl.arange(0, BLOCK_K // 2)
    acc = tl.zeros((16, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 // 2 + half
        packed = tl.load(w_ptr + rows[:, None] * (K // 2) + cols[None, :], mask=row_mask[:, None], other=0)
        scale = tl.load(scales_ptr + rows * (K // GROUP) + k0 // GROUP, mask=row_mask, other=0.0).to(tl.float32)
        zero = tl.load(zeros_ptr + rows * (K // GROUP) + k0 // GROUP, mask=row_mask, other=0).to(tl.float32)
        x_even = tl.load(x_ptr + m[:, None] * x_stride + 2 * cols[None, :], mask=m[:, None] < M, other=0.0)
        x_odd = tl.load(x_ptr + m[:, None] * x_stride + 2 * cols[None, :] + 1, mask=m[:, None] < M, other=0.0)
        low = ((packed & 0xF).to(tl.float32) - zero[:, None]) * scale[:, None]
        high = ((packed >> 4).to(tl.float32) - zero[:, None]) * scale[:, None]
        acc += tl.dot(x_even, tl.trans(low.to(x_even.dtype)))
        acc += tl.dot(x_odd, tl.trans(high.to(x_odd.dtype)))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None] * N + rows[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(m[:, None] < M) & row_mask[None, :])


@triton.jit
def _dequantize_int4_kernel(w_ptr, scales_ptr, zeros_ptr, out_ptr, K, GROUP: tl.constexpr, BLOCK_K: tl.constexpr,
                            USE_PDL: tl.constexpr):
    # Grid: (N, cdiv(K, BLOCK_K)). out: [N, K] in the activation dtype.
    wait_for_inputs(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = cols < K
    packed = tl.load(w_ptr + row * (K // 2) + cols // 2, mask=mask, other=0)
    q = (packed >> ((cols % 2) * 4).to(tl.uint8)) & 0xF
    scale = tl.load(scales_ptr + row * (K // GROUP) + cols // GROUP, mask=mask, other=0.0).to(tl.float32)
    zero = tl.load(zeros_ptr + row * (K // GROUP) + cols // GROUP, mask=mask, other=0).to(tl.float32)
    tl.store(out_ptr + row * K + cols, ((q.to(tl.float32) - zero) * scale).to(out_ptr.dtype.element_ty), mask=mask)


def _gemv_kernels() -> ModuleType:
    """The batch-1 GEMV's module: the Gluon kernel from Triton 3.6 on (the Gluon dialect it is
    written in, and tested with), else the plain-Triton one, which is also what Triton's
    interpreter can run (TRITON_INTERPRET=1: it runs Triton, not Gluon)."""
    major, minor = (int(part) for part in triton.__version__.split(".")[:2])
    if os.environ.get("TRITON_INTERPRET") == "1" or (major, minor) < (3, 6):
        return int4_gemv_triton
    from lite.backends.cuda.kernels import int4_gemv_gluon
    return int4_gemv_gluon


int4_gemv = _gemv_kernels()
SKINNY_MAX_ROWS = 16  # up to here one padded tl.dot tile; beyond, dequantize + cuBLAS
SKINNY_CONFIG = {"block_n": 32, "block_k": 128, "num_warps": 4, "num_stages": 3}


def int4_skinny_gemm(x: torch.Tensor, weight: CUDAInt4Weight, bias: torch.Tensor | None = None,
                     block_n: int = 32, block_k: int = 128, num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """x: [..., K] with at most SKINNY_MAX_ROWS rows -> [..., N]."""
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    n, k = weight.shape
    out = torch.empty((rows.shape[0], n), dtype=x.dtype, device=x.device)
    _int4_skinny_gemm_kernel[(triton.cdiv(n, block_n),)](
        rows, weight.packed, weight.scales, weight.zeros, bias if bias is not None else weight.scales, out,
        rows.shape[0], n, k, rows.stride(0), GROUP=weight.group_size, HAS_BIAS=bias is not None,
        BLOCK_N=block_n, BLOCK_K=min(block_k, weight.group_size), num_warps=num_warps, num_stages=num_stages,
        **launch_options(x.device))
    return out.view(*x.shape[:-1], n)


def dequantize_int4(weight: CUDAInt4Weight, dtype: torch.dtype) -> torch.Tensor:
    n, k = weight.shape
    out = torch.empty((n, k), dtype=dtype, device=weight.packed.device)
    _dequantize_int4_kernel[(n, triton.cdiv(k, 1024))](weight.packed, weight.scales, weight.zeros, out, k,
                                                       GROUP=weight.group_size, BLOCK_K=1024, num_warps=4,
                                                       **launch_options(out.device))
    return out


def prepare_w4a16(weight: Int4Weight, device: torch.device) -> CUDAInt4Weight:
    q = weight.qweight.to(device)
    return CUDAInt4Weight((q[:, 0::2] | (q[:, 1::2] << 4)).contiguous(), weight.scales.to(device).contiguous(),
                          weight.zeros.to(device).contiguous(), weight.group_size)


def linear_w4a16(x: torch.Tensor, weight: CUDAInt4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if rows == 1:
        return int4_gemv.gemv(x, weight, bias, **int4_gemv.gemv_tiles(*weight.shape))
    if rows <= SKINNY_MAX_ROWS and x.dtype != torch.float32:  # tl.dot would round float32 to tf32
        return int4_skinny_gemm(x, weight, bias, **SKINNY_CONFIG)
    return F.linear(x, dequantize_int4(weight, x.dtype), bias)


def linear_w4a16_silu_and_mul(x: torch.Tensor, weight: CUDAInt4Weight, bias: torch.Tensor | None = None
                              ) -> torch.Tensor:
    """SiLU(gate) * up of a merged [gate; up] int4 projection: one kernel for one row where the
    GEMV has the gated epilogue (the Gluon one, at tiles without a split), else the projection
    then activation.silu_and_mul. The same values either way."""
    tiles = dict(int4_gemv.gemv_tiles(*weight.shape))
    if x.numel() == x.shape[-1] and int4_gemv is not int4_gemv_triton and tiles.pop("splits") == 1:
        return int4_gemv.gemv_silu_and_mul(x, weight, bias, **tiles)
    return activation.silu_and_mul(linear_w4a16(x, weight, bias))
