"""Shared checks of the GPU tests. Importing this skips the importing test module unless triton is
installed and a CUDA device is visible.

With TRITON_INTERPRET=1 the kernel tests also run on the CPU through Triton's interpreter (slow,
for checking kernel logic without a GPU); tests that need CUDA itself (graphs, memory sizing,
the engine) still skip there.
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if not torch.cuda.is_available() and not INTERPRETED:
    pytest.skip("no CUDA device (set TRITON_INTERPRET=1 to run the kernel tests on the CPU)",
                allow_module_level=True)

if INTERPRETED:
    from triton.runtime import interpreter

    _patch_lang_tensor = interpreter._patch_lang_tensor

    def _patch_with_scalar_index(tensor, scope):
        # The interpreter holds scalars as 1-element arrays, which NumPy >= 2.4 no longer turns
        # into an int: loops with run-time bounds (range(start, end, step)) would fail.
        _patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = _patch_with_scalar_index

# Relative error ||out - ref|| / ||ref|| against a float32 reference computed from the same inputs:
# what the output dtype's rounding allows (bf16 keeps 8 bits of mantissa, fp16 11).
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}


def skip_bf16_dot_in_interpreter(dtype: torch.dtype) -> None:
    # Triton 3.6's interpreter multiplies bfloat16 tl.dot operands as raw bits; the GPU does not.
    if INTERPRETED and dtype == torch.bfloat16:
        pytest.skip("tl.dot on bfloat16 is wrong in Triton's interpreter; run on a GPU")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not out.isnan().any(), "NaN in the output: an element was left unwritten or overflowed"
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> float:
    err = relative_error(out, ref)
    assert err < TOLERANCE[dtype] * scale, f"relative error {err:.2e} over {TOLERANCE[dtype] * scale:.0e}"
    return err


def poison_allocator(device: torch.device, nbytes: int) -> None:
    """Fill memory the caching allocator will hand out next with NaN, so an op's torch.empty
    output that a kernel leaves partly unwritten shows NaN instead of stale zeros."""
    if device.type == "cuda":
        block = torch.full((nbytes // 4 + 1024,), float("nan"), device=device)
        del block

