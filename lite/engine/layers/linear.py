"""Linear layers, including the merged ones (qkv, gate_up) that load several checkpoint tensors."""
from __future__ import annotations

import torch
from torch import nn

from lite.backends.base import Ops


class Linear(nn.Module):
    """y = x W^T + b. `shard_sizes` marks a merged projection whose rows come from several
    checkpoint tensors (q/k/v or gate/up): one matmul instead of several per step."""

    def __init__(self, in_features: int, out_features: int | list[int], bias: bool, ops: Ops):
        super().__init__()
        self.shard_sizes = list(out_features) if isinstance(out_features, (list, tuple)) else [out_features]
        total = sum(self.shard_sizes)
        self.in_features, self.out_features = in_features, total
        self.weight = nn.Parameter(torch.empty(total, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(total), requires_grad=False) if bias else None
        self.ops = ops

    def load(self, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        """Copy a checkpoint tensor ('weight' or 'bias') into this layer, or into one shard of it."""
        load_rows(getattr(self, name), name, tensor, self.shard_sizes, shard)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(x, self.weight, self.bias)

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(gate) * up of this merged [gate; up] projection."""
        return self.ops.silu_and_mul(self(x))


def load_rows(param: torch.Tensor | None, name: str, tensor: torch.Tensor, shard_sizes: list[int],
              shard: int | None) -> None:
    """Copy a checkpoint tensor into `param`, or into the rows of one shard of a merged projection."""
    if param is None:
        raise ValueError(f"checkpoint has a {name} this layer does not (bias=False)")
    if shard is not None:
        param = param.narrow(0, sum(shard_sizes[:shard]), shard_sizes[shard])
    if param.shape != tensor.shape:
        raise ValueError(f"shape mismatch: checkpoint {tuple(tensor.shape)}, model {tuple(param.shape)}")
    param.copy_(tensor)
