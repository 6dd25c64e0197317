"""Programmatic dependent launch (compute capability 9.0 and newer): a kernel's programs start
while the kernel before it on the stream is still running, and wait in place for its results.

A decode step is ~10 kernels a layer, most of them a few microseconds long, so the gap between
one kernel's last program and the next one's first (launch, scheduling, the first loads' latency)
is a large share of the step. With PDL each Triton kernel here lets its successor launch as soon
as its own programs have all started, and its successor waits for it (`wait_for_inputs`) before
touching any memory an earlier kernel may write or read. Before that wait a kernel may read only
what no kernel writes: the weights, which is how a GEMV fetches its first tile while the
previous kernel finishes. cuBLAS and PyTorch kernels are launched the usual way and order as
ever; the wait makes each kernel complete, memory flushed, before the next one reads.

`LITE_PDL=0` in the environment turns it off (every kernel then launches and orders as usual).
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl


@functools.cache
def _enabled(device: torch.device) -> bool:
    if device.type != "cuda" or os.environ.get("LITE_PDL", "1") == "0":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def launch_options(device: torch.device) -> dict:
    """Keyword arguments for launching one of these kernels on `device`: the USE_PDL constexpr,
    and Triton's launch_pdl where the device supports it."""
    if _enabled(device):
        return {"USE_PDL": True, "launch_pdl": True}
    return {"USE_PDL": False}


@triton.jit
def wait_for_inputs(USE_PDL: tl.constexpr):
    # The previous kernel has completed and its writes are visible after the wait. Dependents are
    # let go only then, so at most one kernel's programs wait ahead of the running one.
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
