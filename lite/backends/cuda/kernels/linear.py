"""W4A16 linears: int4 weights in the AutoAWQ groups lite converts to, 16-bit activations.

Decode reads every weight once per step, so at batch 1 what matters is streaming the packed
int4 bytes at full bandwidth: a GEMV that multiplies the raw nibbles with the activations and
applies each group's scale and zero once per group and word, split along K where a projection
has too few rows to keep every multiprocessor busy. A few rows (batched decode) go
through a skinny GEMM that dequantizes tiles in registers for tl.dot; prefill-sized batches
dequantize the weight once per call and use cuBLAS, where the matmul, not the read, sets the pace.
16-bit linears are gemv.py's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

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


# Split-K scratch per (device, rows, splits, row blocks): partial sums, and arrival counters that
# the kernel leaves at zero. One step's projections run one after another on one stream, so
# projections of a shape share them, and CUDA graphs capture their fixed addresses.
_split_scratch: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _split_buffers(device: torch.device, n: int, splits: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (device, n, splits, blocks)
    if key not in _split_scratch:
        _split_scratch[key] = (torch.empty(splits * n, dtype=torch.float32, device=device),
                               torch.zeros(blocks, dtype=torch.int32, device=device))
    return _split_scratch[key]


@triton.jit
def _sum_splits(acc, rows, row_mask, block, split, partial_ptr, count_ptr, N, SPLITS: tl.constexpr):
    # Split-K without a second launch: each split leaves its partial sums, and the last split of
    # this row block to arrive adds them in split order (the same result whatever the arrival
    # order) and resets the block's counter for the next call. Returns the sums and the rows this
    # program writes: all of them with one split, else only in the last split to arrive.
    writes = row_mask
    if SPLITS > 1:
        tl.store(partial_ptr + split * N + rows, acc, mask=row_mask)
        tl.debug_barrier()  # every thread's partial is written before the counter moves
        arrived = tl.atomic_add(count_ptr + block, 1, sem="acq_rel", scope="gpu")
        writes = row_mask & (arrived == SPLITS - 1)
        if arrived == SPLITS - 1:
            acc = tl.zeros(acc.shape, tl.float32)
            for s in tl.static_range(SPLITS):
                acc += tl.load(partial_ptr + s * N + rows, mask=row_mask, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(count_ptr + block, 0, sem="relaxed", scope="gpu")
    return acc, writes


@triton.jit
def _word_tile(w_ptr, rows, row_mask, groups, last, K, GROUP: tl.constexpr):
    # [rows, groups, GROUP / 8] int32 words of packed nibbles; groups from `last` on read as 0.
    words = groups[:, None] * (GROUP // 8) + tl.arange(0, GROUP // 8)[None, :]
    return tl.load(w_ptr + rows[:, None, None] * (K // 8) + words[None, :, :],
                   mask=row_mask[:, None, None] & (groups < last)[None, :, None], other=0)


# Float bits of 2^15, 2^11 and 2^7. A nibble ORed into mantissa bits p..p+3 (p = 8, 12, 16) of
# 2^(23 - p) makes the float 2^(23 - p) + q exactly. They reach the kernel as arguments, not
# constants, so that ptxas holds them in registers and does the AND and the OR in one LOP3 (one
# instruction cannot take two immediates).
_NIBBLE_FLOAT_BITS = (0x47000000, 0x45000000, 0x43000000)


@triton.jit
def _nibble_products(words, x_m, m: tl.constexpr, bits8, bits12, bits16):
    # q * x for the nibble of each word at bits 4m, as float32: bits 8-19 are used where they
    # lie, bits 0-7 shifted up by 8 and bits 20-31 down by 12 (2 shifts a word, not 8).
    if m < 2:
        src = words << 8
        P = 8 + 4 * m
    elif m < 5:
        src = words
        P = 4 * m
    else:
        src = words >> 12
        P = 4 * m - 12
    if P == 8:
        f = ((src & 0xF00) | bits8).to(tl.float32, bitcast=True)
    elif P == 12:
        f = ((src & 0xF000) | bits12).to(tl.float32, bitcast=True)
    else:
        f = ((src & 0xF0000) | bits16).to(tl.float32, bitcast=True)
    # Taking the offset off before the product keeps every product exact.
    return (f - (1 << (23 - P))) * x_m


@triton.jit
def _int4_gemv_kernel(x_ptr, w_ptr, scales_ptr, zeros_ptr, bias_ptr, out_ptr, partial_ptr, count_ptr, N, K,
                      bits8, bits12, bits16, GROUP: tl.constexpr, GROUPS_PER_TILE: tl.constexpr,
                      HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, AHEAD: tl.constexpr,
                      USE_PDL: tl.constexpr):
    # out[N] = W[N, K] @ x[K]. Grid: (cdiv(N, BLOCK_N), SPLITS); a program streams BLOCK_N rows over
    # one of SPLITS slices of the groups, GROUPS_PER_TILE groups at a time as a
    # [BLOCK_N, GROUPS_PER_TILE, GROUP / 8] tile of int32 words (input column 8j + m at bits 4m of
    # word j), AHEAD tiles in flight. Per group, sum_k (q_k - z) s x_k = s (sum_k q_k x_k - z sum_k x_k):
    # scale and zero once per group and word, and the sums across threads once, at the end.
    block = tl.program_id(0)
    split = tl.program_id(1)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    g = tl.arange(0, GROUPS_PER_TILE)
    word = tl.arange(0, GROUP // 8)
    num_groups = K // GROUP
    per_split = tl.cdiv(num_groups, SPLITS)
    first = split * per_split
    last = tl.minimum(first + per_split, num_groups)
    scaled = tl.zeros((BLOCK_N, GROUPS_PER_TILE, GROUP // 8), tl.float32)
    zero_terms = tl.zeros((BLOCK_N, GROUPS_PER_TILE), tl.float32)
    # Weights are never written, so the first tiles are on their way before the previous kernel
    # ends; each tile after is requested before the arithmetic on an earlier one.
    tile = _word_tile(w_ptr, rows, row_mask, first + g, last, K, GROUP)
    if AHEAD == 2:
        next_tile = _word_tile(w_ptr, rows, row_mask, first + GROUPS_PER_TILE + g, last, K, GROUP)
    wait_for_inputs(USE_PDL)
    for g0 in range(first, last, GROUPS_PER_TILE):
        groups = g0 + g  # [G]
        group_mask = groups < last
        words = tile
        if AHEAD == 2:
            tile = next_tile
            next_tile = _word_tile(w_ptr, rows, row_mask, groups + 2 * GROUPS_PER_TILE, last, K, GROUP)
        else:
            tile = _word_tile(w_ptr, rows, row_mask, groups + GROUPS_PER_TILE, last, K, GROUP)
        x_base = x_ptr + 8 * (groups[:, None] * (GROUP // 8) + word[None, :])  # [G, GROUP / 8]
        dots = tl.zeros((BLOCK_N, GROUPS_PER_TILE, GROUP // 8), tl.float32)
        x_sums = tl.zeros((GROUPS_PER_TILE, GROUP // 8), tl.float32)
        for m in tl.static_range(8):
            x_m = tl.load(x_base + m, mask=group_mask[:, None], other=0.0).to(tl.float32)
            dots += _nibble_products(words, x_m[None, :, :], m, bits8, bits12, bits16)
            x_sums += x_m
        meta = rows[:, None] * num_groups + groups[None, :]
        meta_mask = row_mask[:, None] & group_mask[None, :]
        scale = tl.load(scales_ptr + meta, mask=meta_mask, other=0.0).to(tl.float32)
        zero = tl.load(zeros_ptr + meta, mask=meta_mask, other=0).to(tl.float32)
        scaled += scale[:, :, None] * dots
        zero_terms += scale * zero * tl.sum(x_sums, axis=1)[None, :]
    acc = tl.sum(tl.sum(scaled, axis=2), axis=1) - tl.sum(zero_terms, axis=1)
    acc, writes = _sum_splits(acc, rows, row_mask, block, split, partial_ptr, count_ptr, N, SPLITS)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=writes, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, acc.to(out_ptr.dtype.element_ty), mask=writes)


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


SKINNY_MAX_ROWS = 16  # up to here one padded tl.dot tile; beyond, dequantize + cuBLAS
MANY_ROWS = 16384


def gemv_config(n: int, k: int) -> dict:
    """The GEMV tiles for an [n, k] weight: the best measured for each Llama-3-8B projection on
    an H100 (benchmarks/int4_gemv_variants.py, NOTES.md), chosen by the shape's proportions.
    Many rows (gate_up) keep every SM busy with small tiles and no split; fewer rows split K; qkv,
    whose four splits leave each program few tiles, keeps two of them in flight to hide the latency."""
    if n >= MANY_ROWS:
        return dict(block_n=16, groups_per_tile=4, splits=1, num_warps=2)
    if k >= 2 * n:  # down
        return dict(block_n=32, groups_per_tile=4, splits=4, num_warps=2)
    if n > k:  # qkv
        return dict(block_n=64, groups_per_tile=2, splits=4, num_warps=4, ahead=2)
    return dict(block_n=64, groups_per_tile=2, splits=8, num_warps=2)  # o


SKINNY_CONFIG = dict(block_n=32, block_k=128, num_warps=4, num_stages=3)


def int4_gemv(x: torch.Tensor, weight: CUDAInt4Weight, bias: torch.Tensor | None = None, block_n: int = 32,
              groups_per_tile: int = 2, splits: int = 8, num_warps: int = 2, ahead: int = 1) -> torch.Tensor:
    """One row: x [K] (any leading shape of one element) -> [..., N]. `ahead`: weight tiles in
    flight per program, 1 or 2."""
    if ahead not in (1, 2):
        raise ValueError(f"ahead must be 1 or 2 tiles, not {ahead}")
    n, k = weight.shape
    row = x.reshape(k).contiguous()
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    blocks = triton.cdiv(n, block_n)
    partial, count = _split_buffers(x.device, n, splits, blocks) if splits > 1 else (out, out)
    _int4_gemv_kernel[(blocks, splits)](
        row, weight.packed.view(torch.int32), weight.scales, weight.zeros, bias if bias is not None else weight.scales,
        out, partial, count, n, k, *_NIBBLE_FLOAT_BITS, GROUP=weight.group_size, GROUPS_PER_TILE=groups_per_tile,
        HAS_BIAS=bias is not None, BLOCK_N=block_n, SPLITS=splits, AHEAD=ahead, num_warps=num_warps, num_stages=1,
        **launch_options(x.device))
    return out.view(*x.shape[:-1], n)


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
        return int4_gemv(x, weight, bias, **gemv_config(*weight.shape))
    if rows <= SKINNY_MAX_ROWS and x.dtype != torch.float32:  # tl.dot would round float32 to tf32
        return int4_skinny_gemm(x, weight, bias, **SKINNY_CONFIG)
    return F.linear(x, dequantize_int4(weight, x.dtype), bias)
