"""The CPU backend's C++ kernels, compiled on first use with the machine's compiler and cached.

Building needs a C++ compiler and ninja; without them the backend runs its PyTorch-only path and
says why once.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import platform
from pathlib import Path

logger = logging.getLogger("lite.backends")

_SOURCE = Path(__file__).parent / "csrc" / "kernels.cpp"


def _cpu_signature() -> str:
    """Short digest of the CPU's instruction-set flags: the build uses -march=native, so a cache
    shared between different machines (a home folder on NFS) must not hand one's build to another."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha256(flags.encode()).hexdigest()[:12]


# OpenMP lets the kernels' at::parallel_for split sequences and rows over PyTorch's threads (the
# same libgomp PyTorch loads); a compiler without it (Apple clang) builds them single-threaded.
PARALLEL_FLAGS = (("-fopenmp",), ("-fopenmp-simd",))


@functools.cache
def cpu_kernels():
    """The compiled module (paged_decode, paged_decode_quantized, rms_norm, add_rms_norm,
    silu_and_mul; float32), or None when it cannot be built here."""
    logger.info("loading the CPU backend's C++ kernels (compiled on first use, about a minute, then cached)")
    from torch.utils.cpp_extension import load

    failure = None
    for flags in PARALLEL_FLAGS:
        try:
            return load(name=f"lite_cpu_kernels_{_cpu_signature()}_{flags[0][2:].replace('-', '_')}",
                        # Fresh lists: load() appends its own flags to them.
                        sources=[str(_SOURCE)], extra_cflags=["-O3", "-march=native", *flags],
                        extra_ldflags=list(flags), verbose=False)
        except Exception as exc:  # no compiler, no ninja, unsupported flags: the torch path still works
            failure = exc
    logger.warning("CPU C++ kernels unavailable (%s); using PyTorch ops only",
                   str(failure).splitlines()[0] if str(failure) else type(failure).__name__)
    return None
