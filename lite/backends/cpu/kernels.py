"""The CPU backend's C++ kernels, compiled on first use with the machine's compiler and cached.

Building needs a C++ compiler and ninja; without them the backend runs its PyTorch-only path and
says why once.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger("lite.backends")

_SOURCE = Path(__file__).parent / "csrc" / "paged_decode.cpp"


@functools.cache
def paged_decode_kernel():
    """The compiled module with `paged_decode(q, k_cache, v_cache, block_tables, context_lens,
    scale)`, or None when it cannot be built here."""
    try:
        from torch.utils.cpp_extension import load
        module = load(name="lite_cpu_paged_decode", sources=[str(_SOURCE)],
                      extra_cflags=["-O3", "-march=native", "-fopenmp-simd"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, unsupported flags: the torch path still works
        logger.warning("CPU paged-decode kernel unavailable (%s); decode attention gathers K/V "
                       "with PyTorch ops instead", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return module
