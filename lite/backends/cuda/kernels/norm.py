"""RMSNorm and fused residual-add + RMSNorm: one pass over each row, statistics in float32."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs


@triton.jit
def _rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr,
                     x_stride, residual_stride, hidden, eps,
                     HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    # One program per row. x, residual: [rows, hidden] (row strides given); outputs contiguous.
    wait_for_inputs(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        # The sum is rounded to the model's dtype before it is normalized, as the reference does:
        # it is the next layer's residual, so both must see the same values.
        x = (x.to(tl.float32) + tl.load(residual_ptr + row * residual_stride + cols, mask=mask,
                                        other=0.0).to(tl.float32)).to(x.dtype)
        tl.store(residual_out_ptr + row * hidden + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / hidden + eps)
    normed = (xf * rstd).to(x.dtype).to(tl.float32)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * hidden + cols, (normed * weight).to(out_ptr.dtype.element_ty), mask=mask)


def _launch(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float):
    hidden = x.shape[-1]
    rows_x = x.reshape(-1, hidden)
    if rows_x.stride(-1) != 1:
        rows_x = rows_x.contiguous()
    out = torch.empty(rows_x.shape, dtype=x.dtype, device=x.device)
    rows_res = residual_out = None
    if residual is not None:
        rows_res = residual.reshape(-1, hidden)
        if rows_res.stride(-1) != 1:
            rows_res = rows_res.contiguous()
        residual_out = torch.empty_like(out)
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(rows_x.shape[0],)](
        rows_x, rows_res if rows_res is not None else rows_x, weight, out,
        residual_out if residual_out is not None else out,
        rows_x.stride(0), rows_res.stride(0) if rows_res is not None else 0, hidden, eps,
        HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=min(max(block // 256, 1), 16),
        **launch_options(x.device))
    shape = x.shape
    return out.view(shape), (None if residual_out is None else residual_out.view(shape))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _launch(x, None, weight, eps)[0]


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual) in one read of each input and one write of each output."""
    return _launch(x, residual, weight, eps)
