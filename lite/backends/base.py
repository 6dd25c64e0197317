"""The device abstraction: what every backend provides to the device-agnostic engine."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from lite.backends import reference

# A quantized KV row (one token, one head) carries a float32 scale and zero beside its integers.
KV_SCALE_BYTES = 8
KV_CACHE_BITS = {"none": None, "int8": 8, "int4": 4}  # kv_cache_dtype (config.py) -> KVCacheSpec.kv_bits


@dataclass(frozen=True)
class Availability:
    """A capability answer that explains itself: 'ascend: torch_npu not installed'."""
    ok: bool
    reason: str
    devices: tuple[str, ...] = ()  # human-readable device names with memory


@dataclass(frozen=True)
class Ops:
    """The fusable ops models call. A backend overrides some; the rest fall back to the reference."""
    rms_norm: Callable = reference.rms_norm
    add_rms_norm: Callable = reference.add_rms_norm
    silu_and_mul: Callable = reference.silu_and_mul
    linear: Callable = reference.linear
    prepare_w4a16: Callable = reference.prepare_w4a16  # int4 weight -> backend layout, once at load
    linear_w4a16: Callable = reference.linear_w4a16
    # SiLU(gate) * up of a merged [gate; up] int4 projection in one call, where a backend fuses
    # them; None: the layer calls linear_w4a16, then silu_and_mul.
    linear_w4a16_silu_and_mul: Callable | None = None
    prepare_w8a16: Callable = reference.prepare_w8a16  # float weight -> int8 per row, once at load
    linear_w8a16: Callable = reference.linear_w8a16

    @classmethod
    def with_overrides(cls, overrides: dict[str, Callable]) -> "Ops":
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyError(f"unknown ops: {sorted(unknown)}")
        return cls(**overrides)


@dataclass
class BatchLayout:
    """One step's batch as plain integers, built by the runner; decodes (query_len 1) come first."""
    query_lens: list[int]
    context_lens: list[int]  # tokens in the cache once this step's tokens are stored
    block_tables: list[list[int]]
    slot_mapping: list[int]  # cache slot of each new token, in batch order
    block_size: int

    @property
    def num_decodes(self) -> int:
        n = 0
        for q in self.query_lens:
            if q != 1:
                break
            n += 1
        return n


@dataclass
class KVCacheSpec:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    num_blocks: int
    dtype: torch.dtype
    kv_bits: int | None = None  # 8 or 4: stored quantized per token and head; None: stored in dtype


class AttentionOps(ABC):
    """Stores new K/V into the paged cache and attends over cached prefix + new tokens."""

    @abstractmethod
    def build_metadata(self, layout: BatchLayout) -> Any:
        """Turn the step's layout into device tensors once; every layer reads the result."""

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: Any,
                metadata: Any, scale: float, rope: torch.Tensor | None = None) -> torch.Tensor:
        """q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim] -> [tokens, heads, head_dim].
        rope: [tokens, head_dim / 2] complex64 phasors by which q and k are still to be rotated
        (interleaved pairs, reference.rotary), or None where they need no rotation. The rotation
        is the backend's so that it can happen in the kernel that stores k (one launch fewer a
        layer: ~5% of a batch-1 decode step on an H100)."""


class GraphRunner(ABC):
    """Replays captured forward passes (CUDA/HIP graphs) for the steps it was captured for."""

    @abstractmethod
    def can_replay(self, layout: BatchLayout) -> bool:
        """Whether a captured graph serves this step (e.g. decodes only, few enough of them)."""

    @abstractmethod
    def replay(self, token_ids: list[int], positions: list[int], layout: BatchLayout,
               device_token_ids: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The model's hidden states [tokens, hidden] for this step, as model.forward returns them.
        `device_token_ids` (rows, ids), both on the device, overrides those rows' token ids."""


@dataclass
class ForwardContext:
    """What a model's attention layers need for one step; built by the runner, never by the model."""
    attention: AttentionOps
    metadata: Any
    kv_caches: list[Any] = field(default_factory=list)


class Backend(ABC):
    name: ClassVar[str]
    device_type: ClassVar[str]  # the torch device string: cuda | npu | xpu | cpu
    preferred_block_size: ClassVar[int] = 16
    # True where a forward pass returns once its work is queued on the device, so the host can
    # schedule the next step while the device runs this one (the engine's async scheduling).
    runs_ahead: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def availability(cls) -> Availability:
        """A cheap probe that never raises and says why not."""

    def __init__(self, device_index: int = 0):
        self.device = torch.device(self.device_type, device_index) if self.device_type != "cpu" \
            else torch.device("cpu")
        self.ops = Ops.with_overrides(self.op_overrides())

    def op_overrides(self) -> dict[str, Callable]:
        return {}

    @abstractmethod
    def attention(self) -> AttentionOps: ...

    @abstractmethod
    def available_kv_memory(self, fraction: float) -> int:
        """Bytes the KV cache may take now, after the weights are loaded."""

    def measure_kv_memory(self, fraction: float, warm_up: Callable[[], None]) -> int:
        """Bytes the KV cache may take, given `warm_up`: one forward pass of the largest step the
        scheduler may build, on a scratch cache. A backend whose activations compete with the
        cache for device memory runs it to see their peak; by default it is not run."""
        return self.available_kv_memory(fraction)

    def graph_runner(self, model: Any, kv_caches: list[Any], max_num_seqs: int,
                     max_model_len: int, block_size: int) -> GraphRunner | None:
        """Captured decode steps for this model and cache, or None to run every step eagerly."""
        return None

    @abstractmethod
    def allocate_kv_cache(self, spec: KVCacheSpec) -> list[Any]:
        """One cache object per layer, in the backend's own physical layout."""

    @staticmethod
    def kv_bytes_per_block(spec: KVCacheSpec) -> int:
        rows = 2 * spec.num_layers * spec.block_size * spec.num_kv_heads  # K and V rows of head_dim
        if spec.kv_bits:
            return rows * (spec.head_dim * spec.kv_bits // 8 + KV_SCALE_BYTES)
        return rows * spec.head_dim * torch.empty((), dtype=spec.dtype).element_size()

    def default_dtype(self, checkpoint_dtype: torch.dtype) -> torch.dtype:
        return checkpoint_dtype

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device, without waiting for the work queued there."""
        return torch.from_numpy(array).to(self.device)

    def download(self, tensors: dict[str, torch.Tensor]) -> Callable[[], dict[str, torch.Tensor]]:
        """Start copying device tensors to the host; the call returned waits for these alone, not
        for whatever was queued on the device after them."""
        host = {name: tensor.cpu() for name, tensor in tensors.items()}
        return lambda: host

    def synchronize(self) -> None:
        pass
