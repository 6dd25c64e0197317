"""Every elementwise CUDA kernel against lite/backends/reference.py, on fresh random inputs."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from .gpu_helpers import assert_close, poison_allocator  # noqa: E402
from lite.backends import reference  # noqa: E402
from lite.backends.cuda.kernels import activation, norm  # noqa: E402

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", [(1, 4096), (37, 576), (5, 100)])
def test_rms_norm_and_fused_add(device, dtype, rows, hidden):
    x = torch.randn(rows, hidden, device=device).to(dtype)
    residual = torch.randn(rows, hidden, device=device).to(dtype)
    weight = (torch.rand(hidden, device=device) + 0.5).to(dtype)
    poison_allocator(device, 4 * rows * hidden * 4)
    assert_close(norm.rms_norm(x, weight, 1e-6), reference.rms_norm(x.float(), weight.float(), 1e-6), dtype)
    poison_allocator(device, 4 * rows * hidden * 4)
    out, new_residual = norm.add_rms_norm(x, residual, weight, 1e-6)
    ref_out, ref_residual = reference.add_rms_norm(x.float(), residual.float(), weight.float(), 1e-6)
    assert_close(new_residual, ref_residual, dtype)
    assert_close(out, ref_out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,width", [(1, 14336), (33, 1536), (4, 100)])
def test_silu_and_mul(device, dtype, rows, width):
    x = torch.randn(rows, 2 * width, device=device).to(dtype)
    poison_allocator(device, rows * width * 4)
    assert_close(activation.silu_and_mul(x), reference.silu_and_mul(x.float()), dtype)
