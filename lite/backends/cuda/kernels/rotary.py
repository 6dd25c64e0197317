"""Rotary embedding on interleaved pairs (x[2i], x[2i+1]), in place: the q/k slab of the qkv output."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs


@triton.jit
def _rotary_kernel(x_ptr, freqs_ptr, token_stride, head_stride, num_heads,
                   HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, USE_PDL: tl.constexpr):
    # Grid: (tokens, cdiv(heads, BLOCK_H)). x: [tokens, heads, 2 * HALF], last dim contiguous;
    # freqs: [tokens, HALF, 2] float32 (cos, sin), the complex64 phasors viewed as pairs.
    wait_for_inputs(USE_PDL)
    token = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    pairs = tl.arange(0, BLOCK_P)
    mask = (heads[:, None] < num_heads) & (pairs[None, :] < HALF)
    cos = tl.load(freqs_ptr + token * 2 * HALF + 2 * pairs, mask=pairs < HALF, other=1.0)
    sin = tl.load(freqs_ptr + token * 2 * HALF + 2 * pairs + 1, mask=pairs < HALF, other=0.0)
    even_ptr = x_ptr + token * token_stride + heads[:, None] * head_stride + 2 * pairs[None, :]
    even = tl.load(even_ptr, mask=mask, other=0.0).to(tl.float32)
    odd = tl.load(even_ptr + 1, mask=mask, other=0.0).to(tl.float32)
    tl.store(even_ptr, (even * cos[None, :] - odd * sin[None, :]).to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(even_ptr + 1, (even * sin[None, :] + odd * cos[None, :]).to(x_ptr.dtype.element_ty), mask=mask)


def rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x: [tokens, heads, head_dim] (any token and head strides, last dim contiguous), rotated in
    place and returned; freqs: [tokens, head_dim / 2] complex64."""
    tokens, num_heads, head_dim = x.shape
    if x.stride(-1) != 1:
        raise ValueError("rotary needs the head dimension contiguous")
    if tokens == 0:
        return x
    half = head_dim // 2
    block_h = min(triton.next_power_of_2(num_heads), 16)
    _rotary_kernel[(tokens, triton.cdiv(num_heads, block_h))](
        x, torch.view_as_real(freqs.contiguous()), x.stride(0), x.stride(1), num_heads,
        HALF=half, BLOCK_H=block_h, BLOCK_P=triton.next_power_of_2(half), num_warps=4,
        **launch_options(x.device))
    return x
