"""What a person or client is told about a served model: backend, precision, quantization, vision,
the generation settings its authors suggest. `lite serve` reports it in /v1/models; the web demo
shows it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# The generation_config.json keys that set sampling defaults (Hugging Face's names).
GENERATION_DEFAULT_KEYS = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens",
                           "repetition_penalty")


@dataclass(frozen=True)
class ModelInfo:
    """None where the server does not say (any OpenAI-compatible server other than lite)."""
    name: str
    backend: str | None = None
    dtype: str | None = None  # compute dtype: float32, bfloat16, ...
    weight_quantization: str | None = None  # "none", or e.g. "awq int4, group 128"
    kv_cache_dtype: str | None = None  # none | int8 | int4
    max_model_len: int | None = None
    is_vision: bool = False
    generation_defaults: dict = field(default_factory=dict)  # GENERATION_DEFAULT_KEYS found


def is_vision_language(hf_config: dict) -> bool:
    """Vision-language checkpoints (Qwen2-VL, LLaVA, Gemma 3, Idefics3, Mllama, ...) describe their
    image encoder in a `vision_config` block of config.json; text-only models have none."""
    return bool(hf_config.get("vision_config"))


def weight_quantization(hf_config: dict) -> str:
    config = hf_config.get("quantization_config")
    if not config:
        return "none"
    method = str(config.get("quant_method", "unknown")).lower()
    bits = config.get("bits", config.get("w_bit"))
    group_size = config.get("group_size", config.get("q_group_size"))
    label = f"{method} int{bits}" if bits else method
    return f"{label}, group {group_size}" if group_size else label


def read_generation_defaults(folder: str | Path) -> dict:
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    return {key: config[key] for key in GENERATION_DEFAULT_KEYS if config.get(key) is not None}


def describe_engine(engine, name: str) -> ModelInfo:
    """`engine` is an LLMEngine (not imported here: this module stays free of torch)."""
    hf_config = engine.model_config.hf_config
    return ModelInfo(
        name=name, backend=engine.backend.name, dtype=str(engine.dtype).removeprefix("torch."),
        weight_quantization=weight_quantization(hf_config), kv_cache_dtype=engine.kv_cache_dtype,
        max_model_len=engine.max_model_len, is_vision=is_vision_language(hf_config),
        generation_defaults=read_generation_defaults(engine.config.model))
