"""The batch-1 W4A16 GEMV in Gluon, Triton's dialect in which the kernel states every layout.

Decode at batch 1 reads each int4 weight once a step, so the GEMV should stream the packed words
at the memory's pace with as few instructions a nibble as it can. Left to itself, Triton's
compiler (int4_gemv_triton.py, the fallback) moved the activations through shared memory once
per nibble position, 16 barriers a tile, and loaded the weights four bytes at a time. Here one
layout serves the whole tile: a thread owns VEC consecutive words of a row (VEC * 8 nibbles of one
quantization group; VEC = 2 or 4 words, an 8- or 16-byte load, chosen per shape), the VEC * 8
activations they multiply (16-byte loads, shared by the rows the thread owns), and their group's
scale and zero. Every sum but the last one across threads stays in the thread, so the loop has no
barrier and no shuffle.

Per nibble: one LOP3 makes it a float (int4_gemv_triton.NIBBLE_FLOAT_BITS), one FMA multiplies it.
With 16-bit activations, the floats' offsets and the group's zero come off once per VEC words,
from sums of the activations alone; the offsets are up to 2^15, so the sums carry ~1e-4 of
relative rounding, under the 16-bit output's own. Float32 activations take each offset off before
the product instead (exact, one FADD a nibble more).

For a merged [gate; up] projection followed by SiLU-and-mul, a program can take gate and up rows
in pairs and write SiLU(gate) * up itself (`gemv_silu_and_mul`), rounded as the two kernels round.
"""
from __future__ import annotations

import torch
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from lite.backends.cuda.kernels.int4_gemv_triton import NIBBLE_FLOAT_BITS, gemv_outputs
from lite.backends.cuda.kernels.pdl import launch_options


@gluon.jit
def _wait_for_inputs(USE_PDL: gl.constexpr):
    # pdl.wait_for_inputs, for a Gluon kernel.
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@gluon.jit
def _word_tile(w_ptr, rows, row_mask, w0, vecs, word, last, K_WORDS, VEC: gl.constexpr):
    # [rows, TILE_WORDS / VEC, VEC] int32 words from column word w0 on; words from `last` on read 0.
    cols = gl.expand_dims(w0 + vecs * VEC, 1) + gl.expand_dims(word, 0)
    mask = gl.expand_dims(gl.expand_dims(row_mask, 1), 2) & gl.expand_dims(cols < last, 0)
    return gl.load(w_ptr + gl.expand_dims(gl.expand_dims(rows, 1), 2) * K_WORDS + gl.expand_dims(cols, 0),
                   mask=mask, other=0)


@gluon.jit
def _store_silu_and_mul(total, block, width, out_ptr, BLOCK_N: gl.constexpr, NUM_WARPS: gl.constexpr):
    # total: [BLOCK_N] (gate, up) pairs of outputs block * BLOCK_N / 2 on. Each rounded to the output
    # dtype, then SiLU rounded before the product: what the GEMV and activation.py's kernel store.
    PAIRS: gl.constexpr = gl.BlockedLayout([2], [32], [NUM_WARPS], [0])
    gate, up = gl.split(gl.reshape(gl.convert_layout(total, PAIRS), [BLOCK_N // 2, 2]))
    dtype: gl.constexpr = out_ptr.dtype.element_ty
    gate = gate.to(dtype).to(gl.float32)
    up = up.to(dtype).to(gl.float32)
    silu = (gate / (1.0 + gl.exp(-gate))).to(dtype).to(gl.float32)
    outputs = block * (BLOCK_N // 2) + gl.arange(0, BLOCK_N // 2, layout=gate.type.layout)
    gl.store(out_ptr + outputs, (silu * up).to(dtype), mask=outputs < width)


@gluon.jit
def _int4_gemv_kernel(x_ptr, w_ptr, scales_ptr, zeros_ptr, bias_ptr, out_ptr, partial_ptr, count_ptr, N, K_WORDS,
                      NUM_GROUPS, bits8, bits12, bits16, WORDS_PER_GROUP: gl.constexpr, BLOCK_N: gl.constexpr,
                      TILE_WORDS: gl.constexpr, SPLITS: gl.constexpr, AHEAD: gl.constexpr, HAS_BIAS: gl.constexpr,
                      EXACT: gl.constexpr, GATED: gl.constexpr, LAYOUT: gl.constexpr, USE_PDL: gl.constexpr):
    # out[N] = W[N, K] @ x[K], K = 8 K_WORDS. Grid: (cdiv(N, BLOCK_N), SPLITS); a program streams
    # BLOCK_N rows over one of SPLITS slices of the groups, TILE_WORDS words at a time, AHEAD tiles
    # in flight. LAYOUT: [BLOCK_N, TILE_WORDS / VEC, VEC, 8 nibbles], the last two in the thread.
    # GATED (one split): W is [gate; up], out[N / 2] = SiLU(gate x) * (up x), and a program takes
    # BLOCK_N / 2 outputs' gate and up rows in pairs.
    VEC: gl.constexpr = LAYOUT.size_per_thread[2]
    LW: gl.constexpr = gl.SliceLayout(3, LAYOUT)  # the words
    LV: gl.constexpr = gl.SliceLayout(2, LW)  # one value per row and VEC words: sums, scales, zeros
    LX: gl.constexpr = gl.SliceLayout(0, LAYOUT)  # the activations, [TILE_WORDS / VEC, VEC, 8]
    block = gl.program_id(0)
    split = gl.program_id(1)
    lanes = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LV))
    if GATED:
        gl.static_assert(SPLITS == 1, "the gated epilogue takes one split")
        outputs = block * (BLOCK_N // 2) + lanes // 2
        rows = outputs + (lanes % 2) * (N // 2)
        row_mask = outputs < N // 2
    else:
        rows = block * BLOCK_N + lanes
        row_mask = rows < N
    vecs = gl.arange(0, TILE_WORDS // VEC, layout=gl.SliceLayout(0, LV))
    tile_vecs = gl.arange(0, TILE_WORDS // VEC, layout=gl.SliceLayout(1, gl.SliceLayout(0, LW)))
    tile_word = gl.arange(0, VEC, layout=gl.SliceLayout(0, gl.SliceLayout(0, LW)))
    x_vecs = gl.arange(0, TILE_WORDS // VEC, layout=gl.SliceLayout(1, gl.SliceLayout(2, LX)))
    x_word = gl.arange(0, VEC, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX)))
    nibble = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(0, LX)))
    per_split = gl.cdiv(NUM_GROUPS, SPLITS) * WORDS_PER_GROUP
    first = split * per_split
    last = gl.minimum(first + per_split, K_WORDS)

    # Nibble m sits at bits 4m; bits 8-19 are used where they lie, bits 0-7 moved up by 8 and
    # bits 20-31 down by 12, so nibble m lands at bits P..P+3 (P = 8, 12 or 16) and ORed into the
    # float 2^(23 - P) gives 2^(23 - P) + q exactly.
    x_m = gl.expand_dims(gl.expand_dims(nibble, 0), 0)  # [1, 1, 8] in LX
    m = gl.expand_dims(x_m, 0)  # [1, 1, 1, 8] in LAYOUT
    up = gl.where(m < 2, 8, 0)
    down = gl.where(m >= 5, 12, 0)
    P = gl.where(m < 2, 8 + 4 * m, gl.where(m < 5, 4 * m, 4 * m - 12))
    nibble_bits = 0xF << P
    float_bits = gl.where(P == 8, bits8, gl.where(P == 12, bits12, bits16))
    offset = gl.where(P == 8, 32768.0, gl.where(P == 12, 2048.0, 128.0))
    x_P = gl.where(x_m < 2, 8 + 4 * x_m, gl.where(x_m < 5, 4 * x_m, 4 * x_m - 12))
    x_offset = gl.where(x_P == 8, 32768.0, gl.where(x_P == 12, 2048.0, 128.0))

    acc = gl.zeros((BLOCK_N, TILE_WORDS // VEC), gl.float32, layout=LV)
    # Weights are never written, so the first tiles are on their way before the previous kernel
    # ends; each tile after is requested before the arithmetic on an earlier one.
    tile = _word_tile(w_ptr, rows, row_mask, first, tile_vecs, tile_word, last, K_WORDS, VEC)
    if AHEAD == 2:
        next_tile = _word_tile(w_ptr, rows, row_mask, first + TILE_WORDS, tile_vecs, tile_word, last, K_WORDS, VEC)
    _wait_for_inputs(USE_PDL)
    for w0 in range(first, last, TILE_WORDS):
        words = tile
        if AHEAD == 2:
            tile = next_tile
            next_tile = _word_tile(w_ptr, rows, row_mask, w0 + 2 * TILE_WORDS, tile_vecs, tile_word, last, K_WORDS,
                                   VEC)
        else:
            tile = _word_tile(w_ptr, rows, row_mask, w0 + TILE_WORDS, tile_vecs, tile_word, last, K_WORDS, VEC)
        x_cols = gl.expand_dims(w0 + x_vecs * VEC, 1) + gl.expand_dims(x_word, 0)  # [TILE_WORDS / VEC, VEC]
        x = gl.load(x_ptr + gl.expand_dims(x_cols * 8, 2) + x_m, mask=gl.expand_dims(x_cols < last, 2),
                    other=0.0).to(gl.float32)
        meta = gl.expand_dims(rows, 1) * NUM_GROUPS + gl.expand_dims((w0 + vecs * VEC) // WORDS_PER_GROUP, 0)
        meta_mask = gl.expand_dims(row_mask, 1) & gl.expand_dims(w0 + vecs * VEC < last, 0)
        scale = gl.load(scales_ptr + meta, mask=meta_mask, other=0.0).to(gl.float32)
        zero = gl.load(zeros_ptr + meta, mask=meta_mask, other=0).to(gl.float32)
        f = ((((gl.expand_dims(words, 3) << up) >> down) & nibble_bits) | float_bits).to(gl.float32, bitcast=True)
        if EXACT:
            q = f - (offset + gl.expand_dims(gl.expand_dims(zero, 2), 3))
            dots = gl.sum(gl.sum(q * gl.expand_dims(x, 0), axis=3), axis=2)
        else:
            offsets = gl.convert_layout(gl.sum(gl.sum(x * x_offset, axis=2), axis=1), gl.SliceLayout(0, LV))
            x_sums = gl.convert_layout(gl.sum(gl.sum(x, axis=2), axis=1), gl.SliceLayout(0, LV))
            dots = (gl.sum(gl.sum(f * gl.expand_dims(x, 0), axis=3), axis=2) - gl.expand_dims(offsets, 0)
                    - zero * gl.expand_dims(x_sums, 0))
        acc += scale * dots
    total = gl.sum(acc, axis=1)

    # Split-K without a second launch: each split leaves its partial sums, and the last split of
    # this row block to arrive adds them in split order (the same result whatever the arrival
    # order) and resets the block's counter for the next call.
    writes = row_mask
    if SPLITS > 1:
        gl.store(partial_ptr + split * N + rows, total, mask=row_mask)
        gl.thread_barrier()  # every thread's partial is written before the counter moves
        arrived = gl.atomic_add(count_ptr + block, 1, sem="acq_rel", scope="gpu")
        writes = row_mask & (arrived == SPLITS - 1)
        if arrived == SPLITS - 1:
            total = gl.zeros((BLOCK_N,), gl.float32, layout=gl.SliceLayout(1, LV))
            for s in gl.static_range(SPLITS):
                total += gl.load(partial_ptr + s * N + rows, mask=row_mask, other=0.0, cache_modifier=".cg")
            gl.atomic_xchg(count_ptr + block, 0, sem="relaxed", scope="gpu")
    if HAS_BIAS:
        total += gl.load(bias_ptr + rows, mask=writes, other=0.0).to(gl.float32)
    if GATED:
        _store_silu_and_mul(total, block, N // 2, out_ptr, BLOCK_N, LAYOUT.warps_per_cta[0])
    else:
        gl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=writes)


def gemv_tiles(n: int, k: int) -> dict:
    """The tiles for an [n, k] weight: the best measured for each Llama-3-8B projection on an H100
    in the engine's own captured W4A16 step (benchmarks/NOTES.md, session 7; the chain after a
    norm had picked 2 warps for gate_up and 2 words a thread for qkv and o). No split but for the
    long rows of down: a split's merge (a counter, then the partial sums) costs more latency than
    the extra programs save. 16 rows of 128-word tiles in 4 warps, or for down 32 rows of 64-word
    tiles in 4 splits."""
    if k >= 2 * n:  # down
        return {"block_n": 32, "tile_words": 64, "splits": 4, "num_warps": 4, "vec": 2}
    return {"block_n": 16, "tile_words": 128, "splits": 1, "num_warps": 4}  # qkv, o, gate_up


def _layout(block_n: int, tile_words: int, num_warps: int, vec: int) -> gl.BlockedLayout:
    lanes_k = tile_words // vec
    if tile_words % vec or not 1 <= lanes_k <= 32 or 32 // lanes_k * num_warps > block_n:
        raise ValueError(f"no layout for {block_n} rows of {tile_words} words in {num_warps} warps: a tile needs "
                         f"at most {32 * vec} words and at least one row a thread")
    return gl.BlockedLayout(size_per_thread=[1, 1, vec, 8], threads_per_warp=[32 // lanes_k, lanes_k, 1, 1],
                            warps_per_cta=[num_warps, 1, 1, 1], order=[3, 2, 1, 0])


def gemv(x: torch.Tensor, weight, bias: torch.Tensor | None = None, block_n: int = 16, tile_words: int = 64,
         splits: int = 4, num_warps: int = 2, ahead: int = 1, vec: int = 4) -> torch.Tensor:
    """One row: x [K] (any leading shape of one element) times a linear.CUDAInt4Weight [N, K] ->
    [..., N]. `ahead`: weight tiles in flight per program, 1 or 2; `vec`: words a thread owns
    in a row (4, 2 or 1; fewer where a group holds fewer)."""
    return _launch(x, weight, bias, False, block_n, tile_words, splits, num_warps, ahead, vec)


def gemv_silu_and_mul(x: torch.Tensor, weight, bias: torch.Tensor | None = None, block_n: int = 16,
                      tile_words: int = 64, num_warps: int = 2, ahead: int = 1, vec: int = 4) -> torch.Tensor:
    """SiLU(gate) * up for one row x [K] and a merged [gate; up] weight [2 I, K] -> [..., I], as
    gemv then activation.silu_and_mul would give it, in one kernel: a program's rows are gate
    and up rows in pairs (block_n / 2 outputs)."""
    return _launch(x, weight, bias, True, block_n, tile_words, 1, num_warps, ahead, vec)


def _launch(x, weight, bias, gated: bool, block_n: int, tile_words: int, splits: int, num_warps: int, ahead: int,
            vec: int) -> torch.Tensor:
    if ahead not in (1, 2):
        raise ValueError(f"ahead must be 1 or 2 tiles, not {ahead}")
    words_per_group = weight.group_size // 8
    vec = next(v for v in (4, 2, 1) if v <= vec and words_per_group % v == 0)  # a thread's words: one group
    tile_words = min(tile_words, 32 * vec)
    n, k = weight.shape
    width, outputs_per_block = (n // 2, block_n // 2) if gated else (n, block_n)
    row, out, blocks, partial, count = gemv_outputs(x, width, outputs_per_block, splits)
    _int4_gemv_kernel[(blocks, splits)](
        row, weight.packed.view(torch.int32), weight.scales, weight.zeros, bias if bias is not None else weight.scales,
        out, partial, count, n, k // 8, k // weight.group_size, *NIBBLE_FLOAT_BITS, WORDS_PER_GROUP=words_per_group,
        BLOCK_N=block_n, TILE_WORDS=tile_words, SPLITS=splits, AHEAD=ahead, HAS_BIAS=bias is not None,
        EXACT=x.dtype == torch.float32, GATED=gated, LAYOUT=_layout(block_n, tile_words, num_warps, vec),
        num_warps=num_warps, **launch_options(x.device))
    return out.view(*x.shape[:-1], width)
