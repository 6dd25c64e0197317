"""SiLU(gate) * up over the gate_up projection's output, in one pass."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lite.backends.cuda.kernels.pdl import launch_options, wait_for_inputs


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, x_stride, width, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    # Grid: (rows, cdiv(width, BLOCK)). x: [rows, 2 * width] = [gate | up]; out: [rows, width].
    wait_for_inputs(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < width
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + width + cols, mask=mask, other=0.0).to(tl.float32)
    # Rounded to the dtype before the product, as the reference's F.silu(gate) * up does.
    silu = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * width + cols, (silu * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    width = x.shape[-1] // 2
    rows = x.reshape(-1, 2 * width)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty((rows.shape[0], width), dtype=x.dtype, device=x.device)
    if rows.shape[0]:
        block = min(triton.next_power_of_2(width), 2048)
        _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(width, block))](
            rows, out, rows.stride(0), width, BLOCK=block, num_warps=4 if block <= 1024 else 8,
            **launch_options(x.device))
    return out.view(*x.shape[:-1], width)
