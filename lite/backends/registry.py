"""Backend registry and automatic selection, with the reason for every choice logged."""
from __future__ import annotations

import importlib
import importlib.util
import logging

import torch

from lite.backends.base import Availability, Backend

logger = logging.getLogger("lite.backends")

_BACKENDS: dict[str, type[Backend]] = {}
# Probe order for "auto": accelerators first, the CPU last because it always works.
AUTO_ORDER = ("cuda", "rocm", "ascend", "intel-xpu", "cpu")
# Modules that register a backend on import; imported lazily so `import lite` touches no device.
_MODULES = {"cuda": "lite.backends.cuda", "cpu": "lite.backends.cpu"}


def register(name: str):
    def wrap(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls
    return wrap


def _device_probe(name: str) -> Availability:
    """What this machine offers for a device family lite has no backend for yet."""
    if name == "rocm":
        ok = torch.version.hip is not None and torch.cuda.is_available()
        found = "a ROCm GPU is visible" if ok else "PyTorch is not a ROCm (HIP) build with a GPU"
    elif name == "ascend":
        ok = importlib.util.find_spec("torch_npu") is not None
        found = "torch_npu is installed" if ok else "torch_npu not installed"
    elif name == "intel-xpu":
        ok = hasattr(torch, "xpu") and torch.xpu.is_available()
        found = "an Intel GPU is visible" if ok else "no Intel GPU visible through torch.xpu"
    else:
        return Availability(False, "unknown backend")
    if ok:
        return Availability(False, f"{found}, but this version of lite has no {name} backend yet")
    return Availability(False, found)


def _load(name: str) -> type[Backend] | None:
    if name not in _BACKENDS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    return _BACKENDS.get(name)


def availability(name: str) -> Availability:
    cls = _load(name)
    if cls is None:
        return _device_probe(name)
    try:
        return cls.availability()
    except Exception as exc:  # a probe must never take the process down
        return Availability(False, f"probe failed: {exc}")


def names() -> tuple[str, ...]:
    return AUTO_ORDER


def select(name: str = "auto") -> Backend:
    """Instantiate the named backend, or the first available one for "auto"."""
    if name != "auto":
        if name not in AUTO_ORDER:
            raise ValueError(f"unknown backend {name!r}; choose one of: auto, {', '.join(AUTO_ORDER)}")
        avail = availability(name)
        if not avail.ok:
            raise RuntimeError(f"backend {name!r} is not usable here: {avail.reason}. "
                               "Run `lite env` to see what this machine offers, or use --backend auto.")
        logger.info("backend %s (requested): %s", name, avail.reason)
        return _BACKENDS[name]()
    for candidate in AUTO_ORDER:
        avail = availability(candidate)
        if avail.ok:
            logger.info("backend %s selected: %s", candidate, avail.reason)
            return _BACKENDS[candidate]()
        logger.info("backend %s passed over: %s", candidate, avail.reason)
    raise RuntimeError("no backend is usable on this machine; run `lite env` for details")
