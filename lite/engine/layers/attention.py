from __future__ import annotations

import torch
from torch import nn

from lite.backends.base import ForwardContext


class Attention(nn.Module):
    """Hands q/k/v to the backend's paged attention; the only place a model meets the KV cache."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, layer_idx: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim ** -0.5
        self.layer_idx = layer_idx

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: ForwardContext,
                rope: torch.Tensor | None = None):
        # q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim]; q and k not yet rotated
        # by rope, their positions' phasors (interleaved pairs: the loader reorders q/k rows).
        return ctx.attention.forward(q, k, v, ctx.kv_caches[self.layer_idx], ctx.metadata, self.scale, rope)
