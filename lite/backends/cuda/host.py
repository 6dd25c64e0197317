"""Host <-> device copies that leave the host free while the GPU works through its queue.

A blocking copy waits for everything queued before it, which would stall the host for a whole
forward pass under async scheduling. Pinned buffers from PyTorch's caching host allocator (which
keeps a buffer until its copy has run) let copies queue like kernels, in both directions: a
device-to-host copy into pageable memory cannot be left to finish later.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).pin_memory().to(device, non_blocking=True)


def download(tensors: dict[str, torch.Tensor]) -> Callable[[], dict[str, torch.Tensor]]:
    host = {name: torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
            for name, t in tensors.items()}
    copied = torch.cuda.Event()
    copied.record()

    def wait() -> dict[str, torch.Tensor]:
        copied.synchronize()
        return host
    return wait
