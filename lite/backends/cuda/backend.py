"""The CUDA backend: Triton kernels for attention, the KV cache, the fused elementwise ops and
batch-1 GEMVs, cuBLAS (through PyTorch) for larger matmuls, and CUDA graphs for decode steps."""
from __future__ import annotations

import functools
import importlib.util
from typing import Callable

import numpy as np
import torch

from lite.backends.base import Availability, Backend, KVCacheSpec
from lite.backends.registry import register

# Device memory kept free beyond (1 - memory_fraction) of the card: the decode graphs' own pool,
# the logits of a full decode batch, cuBLAS workspaces and allocator fragmentation.
RESERVED_BYTES = 512 << 20


def _keep_16_bit(weight: torch.Tensor) -> torch.Tensor:
    return weight


@register("cuda")
class CUDABackend(Backend):
    device_type = "cuda"
    preferred_block_size = 16
    runs_ahead = True

    @classmethod
    def availability(cls) -> Availability:
        if torch.version.hip is not None or not torch.cuda.is_available():
            return Availability(False, "no CUDA device visible to PyTorch")
        if importlib.util.find_spec("triton") is None:
            return Availability(False, "an NVIDIA GPU is visible but triton is not installed "
                                       "(pip install 'lite-deploy[cuda]')")
        devices = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(f"cuda:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB, "
                           f"compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs)")
        import triton  # found above

        from lite.backends.cuda.kernels import int4_gemv_triton, linear
        gemv = ("plain Triton; the faster Gluon one needs Triton 3.6+" if linear.int4_gemv is int4_gemv_triton
                else "Gluon")
        return Availability(True, f"CUDA {torch.version.cuda} with Triton {triton.__version__} kernels "
                                  f"(W4A16 batch-1 GEMV: {gemv})", tuple(devices))

    def __init__(self, device_index: int = 0):
        super().__init__(device_index)
        torch.cuda.set_device(self.device)
        self.num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count

    def op_overrides(self):
        # Imported here, not at module level: registering the backend must not need triton.
        from lite.backends.cuda.kernels import activation, gemv, linear, norm
        return {"linear": gemv.linear, "rms_norm": norm.rms_norm, "add_rms_norm": norm.add_rms_norm,
                "silu_and_mul": activation.silu_and_mul,
                "prepare_w4a16": functools.partial(linear.prepare_w4a16, device=self.device),
                "linear_w4a16": linear.linear_w4a16, "linear_w4a16_silu_and_mul": linear.linear_w4a16_silu_and_mul,
                # A W4A16 model's output head stays 16-bit here: the GEMV reads it at ~3.1 TB/s on an
                # H100, while int8 without a fused kernel would dequantize (read 1, write 2, read 2
                # bytes) per step.
                "prepare_w8a16": _keep_16_bit, "linear_w8a16": gemv.linear}

    def attention(self):
        from lite.backends.cuda.attention import CUDAAttention
        return CUDAAttention(self.device, self.num_sms)

    def available_kv_memory(self, fraction: float) -> int:
        free, total = torch.cuda.mem_get_info(self.device)
        return max(0, int(free - total * (1 - fraction)) - RESERVED_BYTES)

    def measure_kv_memory(self, fraction: float, warm_up) -> int:
        # Free memory after the weights, less the activations' peak in the largest step.
        torch.cuda.synchronize(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        warm_up()
        torch.cuda.synchronize(self.device)
        activations = torch.cuda.max_memory_allocated(self.device) - baseline
        torch.cuda.empty_cache()  # what the warm-up cached goes back to the free pool it is measured in
        return max(0, self.available_kv_memory(fraction) - activations)

    def allocate_kv_cache(self, spec: KVCacheSpec):
        from lite.backends.cuda.kv_cache import PagedKVCache
        return [PagedKVCache.allocate(spec, self.device) for _ in range(spec.num_layers)]

    def graph_runner(self, model, kv_caches, max_num_seqs, max_model_len, block_size):
        from lite.backends.cuda.graph_runner import CUDAGraphRunner
        return CUDAGraphRunner(model, self.attention(), kv_caches, max_num_seqs, max_model_len, block_size)

    def default_dtype(self, checkpoint_dtype: torch.dtype) -> torch.dtype:
        # A float32 checkpoint would read twice the bytes per token for no gain in serving.
        return torch.bfloat16 if checkpoint_dtype == torch.float32 else checkpoint_dtype

    def upload(self, array: np.ndarray) -> torch.Tensor:
        from lite.backends.cuda import host
        return host.upload(array, self.device)

    def download(self, tensors: dict[str, torch.Tensor]) -> Callable[[], dict[str, torch.Tensor]]:
        from lite.backends.cuda import host
        return host.download(tensors)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)
