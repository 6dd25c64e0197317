"""Fixtures of the GPU tests. Skipping lives in gpu_helpers.py, which every test module imports."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: under TRITON_INTERPRET=1 only


@pytest.fixture
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device, not Triton's interpreter")
