"""Plain-PyTorch versions of every op: the oracle in tests and the fallback of every backend."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


def rotary(q: torch.Tensor, k: torch.Tensor, cos_sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox/Hugging Face 'rotate half' rotary. q: [T, H, D], k: [T, KH, D], cos_sin: [T, D] holding
    the cos then the sin of each token's position's D/2 frequencies."""
    cos, sin = cos_sin.unsqueeze(1).chunk(2, dim=-1)  # [T, 1, D/2] each

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


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
