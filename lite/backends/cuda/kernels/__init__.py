"""Triton kernels of the CUDA backend, one module per op family; importing one imports triton."""
