"""Plain-PyTorch versions of every op: the oracle in tests and the fallback of every backend."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lite.quantize.int4 import Int4Weight
from lite.quantize.int8 import Int8Weight, quantize_int8_rows


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (rms_norm(x + residual), x + residual): the sum is the next residual."""
    residual = x + residual
    return rms_norm(residual, weight, eps), residual


def rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary on interleaved pairs: (x[2i], x[2i+1]) turns by position x frequency i.
    x: [T, H, D]; freqs: [T, D/2] complex64 (unit phasors of each token's position)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs.unsqueeze(1)).flatten(-2).to(x.dtype)


def interleave_rotary_halves(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Reorder the rows of a Hugging Face q/k projection (or q/k norm) from 'rotate half' order
    [x_0..x_{D/2-1}, y_0..y_{D/2-1}] per head to interleaved pairs [x_0, y_0, x_1, y_1, ...].
    Dot products of q and k are unchanged when both are reordered alike."""
    rows = t.shape[0]
    return t.reshape(rows // head_dim, 2, head_dim // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_tables: list[list[int]], query_lens: list[int], context_lens: list[int],
                    scale: float) -> torch.Tensor:
    """Attention of each sequence's new queries over its whole cached context, one by one.

    q: [tokens, H, D]; k_cache, v_cache: [blocks, block_size, KH, D]. The new tokens are the last
    query_len of each context and see every earlier position (causal).
    """
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // num_kv_heads
    out, start = [], 0
    for blocks, q_len, ctx_len in zip(block_tables, query_lens, context_lens):
        qi = q[start:start + q_len].float()
        start += q_len
        keys = k_cache[blocks].flatten(0, 1)[:ctx_len].float().repeat_interleave(group, dim=1)
        values = v_cache[blocks].flatten(0, 1)[:ctx_len].float().repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", qi, keys) * scale
        query_pos = torch.arange(ctx_len - q_len, ctx_len).unsqueeze(1)
        scores.masked_fill_(torch.arange(ctx_len).unsqueeze(0) > query_pos, float("-inf"))
        out.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(q.dtype))
    return torch.cat(out)


def prepare_w4a16(weight: Int4Weight) -> Int4Weight:
    """Put an int4 weight in the backend's layout once, at load. The reference keeps it unpacked."""
    return weight


def linear_w4a16(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x W^T + b with W int4; the reference dequantizes on every call (exact, slow, the oracle)."""
    return F.linear(x, weight.dequantize(x.dtype), bias)


def prepare_w8a16(weight: torch.Tensor) -> Int8Weight:
    """A float weight -> int8 per output channel, once at load (a W4A16 model's output head)."""
    return quantize_int8_rows(weight)


def linear_w8a16(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight.dequantize(x.dtype), bias)


def quantize_kv(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric per-token-per-head quantization of new K or V rows, x ~ q * scale + zero.

    x: [tokens, kv_heads, head_dim] -> q: [tokens, kv_heads, head_dim * bits / 8] uint8 (int4: two
    values per byte, even index in the low nibble), scale and zero: [tokens, kv_heads] float32.
    Asymmetric because keys carry per-channel offsets that a symmetric int4 grid would waste.
    """
    levels = (1 << bits) - 1
    x = x.float()
    zero, top = x.amin(-1), x.amax(-1)
    scale = (top - zero).clamp(min=1e-8) / levels
    q = ((x - zero.unsqueeze(-1)) / scale.unsqueeze(-1)).round_().clamp_(0, levels).to(torch.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return q, scale, zero


def dequantize_kv(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                  dtype: torch.dtype) -> torch.Tensor:
    """Inverse of quantize_kv for any leading shape: q [..., head_dim * bits / 8] -> [..., head_dim]."""
    if bits == 4:
        q = torch.stack((q & 0xF, q >> 4), dim=-1).flatten(-2)
    return (q.float() * scale.unsqueeze(-1) + zero.unsqueeze(-1)).to(dtype)
