"""The CUDA backend. Importing it registers the backend and imports neither triton nor CUDA state."""
from lite.backends.cuda.backend import CUDABackend

__all__ = ["CUDABackend"]
