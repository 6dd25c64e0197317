"""The device abstraction. Importing this package probes no device and imports no vendor library."""
from lite.backends.base import Availability, Backend, BatchLayout, ForwardContext, KVCacheSpec, Ops
from lite.backends.registry import availability, names, register, select

__all__ = ["Availability", "Backend", "BatchLayout", "ForwardContext", "KVCacheSpec", "Ops",
           "availability", "names", "register", "select"]
