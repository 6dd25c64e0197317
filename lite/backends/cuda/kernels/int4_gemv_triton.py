"""The batch-1 W4A16 GEMV in plain Triton: the fallback where Triton has no Gluon (before 3.6).

int4_gemv_gluon.py's kernel does the same work with explicit layouts and is used wherever it can
be. This one (version 11 in benchmarks/NOTES.md) leaves layouts to Triton's compiler, which moves
the activations through shared memory for each nibble position and loads the weights four bytes
at a time: 23-53% slower per Llama-3-8B projection on an H100 (benchmarks/NOTES.md, session 6). Both multiply the raw nibbles with the
activations and apply each group's scale and zero once per group and word, split along K where a
projection has too few rows to keep every multiprocessor busy.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs

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
NIBBLE_FLOAT_BITS = (0x47000000, 0x45000000, 0x43000000)


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


MANY_ROWS = 16384


def gemv_tiles(n: int, k: int) -> dict:
    """The tiles for an [n, k] weight: the best measured for each Llama-3-8B projection on an H100
    (benchmarks/NOTES.md, version 11), chosen by the shape's proportions. Many rows (gate_up) keep
    every SM busy with small tiles and no split; fewer rows split K; qkv, whose four splits leave
    each program few tiles, keeps two of them in flight to hide the latency."""
    if n >= MANY_ROWS:
        return {"block_n": 16, "groups_per_tile": 4, "splits": 1, "num_warps": 2}
    if k >= 2 * n:  # down
        return {"block_n": 32, "groups_per_tile": 4, "splits": 4, "num_warps": 2}
    if n > k:  # qkv
        return {"block_n": 64, "groups_per_tile": 2, "splits": 4, "num_warps": 4, "ahead": 2}
    return {"block_n": 64, "groups_per_tile": 2, "splits": 8, "num_warps": 2}  # o


def gemv_outputs(x: torch.Tensor, n: int, block_n: int, splits: int) -> tuple:
    """(x as one row, the output, row blocks, partial sums, arrival counters) for a GEMV launch;
    without a split the kernel never touches the last two."""
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    blocks = triton.cdiv(n, block_n)
    partial, count = _split_buffers(x.device, n, splits, blocks) if splits > 1 else (out, out)
    return x.reshape(-1).contiguous(), out, blocks, partial, count


def gemv(x: torch.Tensor, weight, bias: torch.Tensor | None = None, block_n: int = 32, groups_per_tile: int = 2,
         splits: int = 8, num_warps: int = 2, ahead: int = 1) -> torch.Tensor:
    """One row: x [K] (any leading shape of one element) times a linear.CUDAInt4Weight [N, K] ->
    [..., N]. `ahead`: weight tiles in flight per program, 1 or 2."""
    if ahead not in (1, 2):
        raise ValueError(f"ahead must be 1 or 2 tiles, not {ahead}")
    n, k = weight.shape
    row, out, blocks, partial, count = gemv_outputs(x, n, block_n, splits)
    _int4_gemv_kernel[(blocks, splits)](
        row, weight.packed.view(torch.int32), weight.scales, weight.zeros, bias if bias is not None else weight.scales,
        out, partial, count, n, k, *NIBBLE_FLOAT_BITS, GROUP=weight.group_size, GROUPS_PER_TILE=groups_per_tile,
        HAS_BIAS=bias is not None, BLOCK_N=block_n, SPLITS=splits, AHEAD=ahead, num_warps=num_warps, num_stages=1,
        **launch_options(x.device))
    return out.view(*x.shape[:-1], n)
