"""The layers of a W4A16 model (int4 AWQ/GPTQ checkpoints): int4 linears and an int8 output head.

Models are written with `Linear` only; the `swap_in_*` transforms replace linears after the model
is built (like gpt-fast's), so no model file knows about quantization.
"""
from __future__ import annotations

import torch
from torch import nn

from lite.backends.base import Ops
from lite.engine.layers.linear import Linear, load_rows
from lite.quantize.int4 import Int4Weight


class W4A16Linear(nn.Module):
    """y = x W^T + b with W int4. Checkpoint shards (q/k/v, gate/up) arrive one by one as
    Int4Weight; once all have arrived the backend packs them into its own layout, once."""

    def __init__(self, in_features: int, shard_sizes: list[int], bias: nn.Parameter | None, ops: Ops):
        super().__init__()
        self.in_features, self.out_features = in_features, sum(shard_sizes)
        self.shard_sizes = list(shard_sizes)
        self.bias = bias
        self.ops = ops
        self.weight = None  # the backend's packed int4 weight (not a Parameter: no float copy exists)
        self._arrived: dict[int, Int4Weight] = {}

    @classmethod
    def from_linear(cls, linear: Linear) -> "W4A16Linear":
        return cls(linear.in_features, linear.shard_sizes, linear.bias, linear.ops)

    @property
    def is_loaded(self) -> bool:
        return self.weight is not None

    def load(self, name: str, tensor: torch.Tensor | Int4Weight, shard: int | None) -> None:
        if name == "bias":
            load_rows(self.bias, name, tensor, self.shard_sizes, shard)
            return
        if not isinstance(tensor, Int4Weight):
            raise ValueError("this layer is int4 in the checkpoint's quantization_config but its weight "
                             "is stored unquantized; mixed precision within one projection is not supported")
        expected = (self.shard_sizes[shard or 0], self.in_features)
        if tensor.shape != expected:
            raise ValueError(f"shape mismatch: checkpoint {tensor.shape}, model {expected}")
        self._arrived[shard or 0] = tensor
        if len(self._arrived) == len(self.shard_sizes):
            merged = Int4Weight.cat([self._arrived[i] for i in range(len(self.shard_sizes))])
            self.weight = self.ops.prepare_w4a16(merged)
            self._arrived = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear_w4a16(x, self.weight, self.bias)

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(gate) * up of this merged [gate; up] projection, in one kernel where the backend has one."""
        if self.ops.linear_w4a16_silu_and_mul is None:
            return self.ops.silu_and_mul(self(x))
        return self.ops.linear_w4a16_silu_and_mul(x, self.weight, self.bias)


def swap_in_w4a16_linears(model: nn.Module, module_names: set[str]) -> None:
    """Replace the named `Linear` modules with W4A16Linear. Their float weights were never written,
    so on the CPU (lazily mapped pages) they never took memory."""
    for name in module_names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, leaf)
        if not isinstance(linear, Linear):
            raise ValueError(f"{name} is quantized in the checkpoint but is not a linear layer in lite's model")
        setattr(parent, leaf, W4A16Linear.from_linear(linear))


class W8A16Linear(nn.Module):
    """A float linear turned int8 per output channel at load: a W4A16 model's output head, which
    AWQ leaves unquantized (as llama.cpp's 4-bit files keep theirs in 8 bits)."""

    def __init__(self, linear: Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.ops.prepare_w8a16(linear.weight.detach())
        self.bias = linear.bias
        self.ops = linear.ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear_w8a16(x, self.weight, self.bias)


def swap_in_int8_head(model: nn.Module) -> None:
    """After loading: the output head (`lm_head`, tied to the embeddings or not) becomes int8; a tied
    embedding keeps its float rows for the token lookup."""
    model.lm_head = W8A16Linear(model.lm_head)
