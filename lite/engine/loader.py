"""Build a model for a backend and fill it from a Hugging Face folder, shard by shard."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lite.backends.base import Ops
from lite.backends.reference import interleave_rotary_halves
from lite.config import ModelConfig
from lite.engine.layers.linear import Linear
from lite.engine.layers.w4a16_linear import W4A16Linear, swap_in_int8_head, swap_in_w4a16_linears
from lite.engine.dummy import fill_random_weights
from lite.engine.models import model_class
from lite.quantize.awq_format import int4_weights, read_int4_checkpoint
from lite.quantize.int4 import Int4Weight

logger = logging.getLogger("lite.loader")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _checkpoint_tensors(folder: Path):
    files = sorted(folder.glob("*.safetensors"))
    if files:
        for path in files:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        return
    for path in sorted(folder.glob("*.bin")):
        yield from torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()


def _quantized_module_names(folder: Path) -> list[str]:
    """HF names of the modules an AWQ/GPTQ checkpoint stores as int4 (those with a qweight)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: quantized checkpoints are read from *.safetensors files only")
    names = []
    for path in files:
        with safe_open(path, framework="pt") as f:
            names += [name.removesuffix(".qweight") for name in f.keys() if name.endswith(".qweight")]
    return names


def _target(cls, module_name: str) -> tuple[str, int | None]:
    """Checkpoint module name -> (the model's module name, shard index in a merged projection)."""
    parent, _, leaf = module_name.rpartition(".")
    if leaf in cls.packed_modules:
        merged, shard = cls.packed_modules[leaf]
        return f"{parent}.{merged}", shard
    return module_name, None


def checkpoint_dtype(cfg: ModelConfig) -> torch.dtype:
    name = cfg.hf_config.get("torch_dtype") or cfg.hf_config.get("dtype") or "float32"
    return getattr(torch, name, torch.float32)


def _expected_keys(model: nn.Module) -> set[tuple[str, int | None]]:
    keys = set()
    for module_name, module in model.named_modules():
        param_names = [name for name, param in module.named_parameters(recurse=False) if param is not None]
        if isinstance(module, W4A16Linear):
            param_names.append("weight")
        for param_name in param_names:
            shards = range(len(module.shard_sizes)) if isinstance(module, (Linear, W4A16Linear)) and \
                len(module.shard_sizes) > 1 else [None]
            keys.update((f"{module_name}.{param_name}", s) for s in shards)
    return keys


def load_model(folder: str | Path, cfg: ModelConfig, ops: Ops, dtype: torch.dtype,
               device: torch.device, max_positions: int, dummy: bool = False,
               quantize_lm_head: bool = True) -> nn.Module:
    """`quantize_lm_head`: with an int4 checkpoint, make the float output head int8 (W8A16Linear)."""
    folder = Path(folder)
    cls = model_class(cfg.architecture)
    with _default_dtype(dtype), device:
        model = cls(cfg, ops, max_positions)
    if dummy:
        return fill_random_weights(model, cfg)
    tensors = _checkpoint_tensors(folder)
    int4_format = read_int4_checkpoint(cfg.hf_config)
    if int4_format is not None:
        swap_in_w4a16_linears(model, {_target(cls, name)[0] for name in _quantized_module_names(folder)})
        tensors = int4_weights(tensors, int4_format)
    modules = dict(model.named_modules())
    expected = _expected_keys(model)
    if cfg.tie_word_embeddings:
        expected.discard(("lm_head.weight", None))
    loaded, ignored = set(), []
    for name, tensor in tensors:
        if name.endswith("rotary_emb.inv_freq") or (cfg.tie_word_embeddings and name == "lm_head.weight"):
            continue
        checkpoint_module, _, param_name = name.rpartition(".")
        if checkpoint_module.rpartition(".")[2] in cls.rotary_interleaved_modules:
            if isinstance(tensor, Int4Weight):
                tensor = tensor.map_rows(lambda rows: interleave_rotary_halves(rows, cfg.head_dim))
            else:
                tensor = interleave_rotary_halves(tensor, cfg.head_dim)
        module_name, shard = _target(cls, checkpoint_module)
        module = modules.get(module_name)
        takes_int4 = isinstance(module, W4A16Linear) and param_name == "weight"
        if module is None or (getattr(module, param_name, None) is None and not takes_int4):
            ignored.append(name)
            continue
        with torch.no_grad():
            if isinstance(module, (Linear, W4A16Linear)):
                module.load(param_name, tensor, shard)
            else:
                param = getattr(module, param_name)
                if param.shape != tensor.shape:
                    raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} does not match "
                                     f"the model's {tuple(param.shape)}; is config.json from this checkpoint?")
                param.copy_(tensor)
        loaded.add((f"{module_name}.{param_name}", shard))
    missing = sorted(f"{k}[{s}]" if s is not None else k for k, s in expected - loaded)
    if missing:
        raise ValueError(f"the checkpoint in {folder} lacks {len(missing)} tensors the "
                         f"{cfg.architecture} model needs, e.g. {missing[:3]}")
    if ignored:
        logger.warning("ignored %d checkpoint tensors with no place in the model, e.g. %s",
                       len(ignored), ignored[:3])
    if int4_format is not None and quantize_lm_head:
        swap_in_int8_head(model)
    return model.eval()
