"""The CPU backend: PyTorch CPU kernels (oneDNN/MKL on x86), the default every machine can run."""
from __future__ import annotations

import os
import platform

import torch
import torch.nn.functional as F

from lite.backends import reference
from lite.backends.base import Availability, Backend, KVCacheSpec
from lite.backends.cpu import quantized_linear
from lite.backends.cpu.attention import CPUAttention
from lite.backends.cpu.kernels import cpu_kernels
from lite.backends.cpu.kv_quant import QuantizedKVCache
from lite.backends.registry import register

# Without a cap the KV cache of a CPU server would claim most of the host's RAM, which it shares
# with everything else; 4 GiB holds ~45k tokens of an 8B model's int8 cache.
CPU_KV_CAP_BYTES = 4 << 30


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, weight.shape, weight, eps)


def _torch_add_rms_norm(x, residual, weight, eps):
    residual = x + residual
    return F.rms_norm(residual, weight.shape, weight, eps), residual


def _float32_or(kernel, fallback):
    """The C++ kernel for float32 tensors, the PyTorch version for any other dtype."""
    def op(x, *args):
        return kernel(x, *args) if x.dtype == torch.float32 else fallback(x, *args)
    return op


def _fused_ops() -> dict:
    kernels = cpu_kernels()
    if kernels is None:
        return {"rms_norm": _torch_rms_norm, "add_rms_norm": _torch_add_rms_norm}
    return {"rms_norm": _float32_or(kernels.rms_norm, _torch_rms_norm),
            "add_rms_norm": _float32_or(lambda *a: tuple(kernels.add_rms_norm(*a)), _torch_add_rms_norm),
            "silu_and_mul": _float32_or(kernels.silu_and_mul, reference.silu_and_mul)}


@register("cpu")
class CPUBackend(Backend):
    device_type = "cpu"
    preferred_block_size = 16

    @classmethod
    def availability(cls) -> Availability:
        memory = available_memory_bytes() / (1 << 30)
        device = f"{_cpu_name()} ({os.cpu_count()} cores, {memory:.1f} GiB available)"
        return Availability(True, f"PyTorch CPU kernels, {torch.get_num_threads()} threads", (device,))

    def op_overrides(self):
        return {**_fused_ops(),
                "prepare_w4a16": quantized_linear.prepare_w4a16, "linear_w4a16": quantized_linear.linear_w4a16,
                "prepare_w8a16": quantized_linear.prepare_w8a16, "linear_w8a16": quantized_linear.linear_w8a16}

    def attention(self) -> CPUAttention:
        return CPUAttention(cpu_kernels())

    def available_kv_memory(self, fraction: float) -> int:
        return min(int(available_memory_bytes() * fraction * 0.5), CPU_KV_CAP_BYTES)

    def allocate_kv_cache(self, spec: KVCacheSpec) -> list[tuple[torch.Tensor, torch.Tensor] | QuantizedKVCache]:
        if spec.kv_bits:
            return [QuantizedKVCache.allocate(spec) for _ in range(spec.num_layers)]
        shape = (spec.num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim)
        return [(torch.zeros(shape, dtype=spec.dtype), torch.zeros(shape, dtype=spec.dtype))
                for _ in range(spec.num_layers)]

    def default_dtype(self, checkpoint_dtype: torch.dtype) -> torch.dtype:
        # fp16 matmuls on CPU are slow and lossy; fp32 is exact to the checkpoint and fast with MKL.
        return torch.float32 if checkpoint_dtype == torch.float16 else checkpoint_dtype
