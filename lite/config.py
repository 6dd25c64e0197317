"""Small configuration dataclasses, validated on creation."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelConfig:
    """The parts of a Hugging Face config.json the engine needs."""
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    hf_config: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")

    @classmethod
    def from_dict(cls, cfg: dict) -> "ModelConfig":
        cfg = dict(cfg.get("text_config") or {}, **{k: v for k, v in cfg.items() if k != "text_config"})
        archs = cfg.get("architectures") or []
        if not archs:
            raise ValueError("config.json has no 'architectures' entry: cannot tell which model this is")
        heads = cfg["num_attention_heads"]
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        model_type = cfg.get("model_type", "")
        rope_params = cfg.get("rope_parameters") or {}
        rope_scaling = cfg.get("rope_scaling") or (rope_params if rope_params.get("rope_type", "default") != "default" else None)
        return cls(
            architecture=archs[0],
            model_type=model_type,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta") or rope_params.get("rope_theta", 10000.0),
            rope_scaling=rope_scaling,
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            attention_bias=cfg.get("attention_bias", model_type == "qwen2"),
            qk_norm=model_type == "qwen3",
            sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
            hf_config=cfg,
        )

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ModelConfig":
        return cls.from_dict(json.loads((Path(folder) / "config.json").read_text()))


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16
    # Bytes of KV cache; None lets the backend size it (free memory x memory_fraction).
    kv_cache_memory: int | None = None
    memory_fraction: float = 0.9
    enable_prefix_caching: bool = True

    def __post_init__(self):
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be positive, got {self.kv_cache_memory}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048  # the per-step token budget
    max_model_len: int = 4096
    enable_chunked_prefill: bool = True

    def __post_init__(self):
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"without chunked prefill the token budget ({self.max_num_batched_tokens}) must hold "
                f"a whole prompt of max_model_len ({self.max_model_len}) tokens")


@dataclass(frozen=True)
class EngineConfig:
    model: str  # a local folder after hub resolution
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    backend: str = "auto"
    seed: int = 0
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_chunked_prefill: bool = True
    block_size: int | None = None  # None: the backend's preferred size
    kv_cache_memory: int | None = None  # bytes; None: memory_fraction of what the backend has free
    memory_fraction: float = 0.9
    enable_prefix_caching: bool = True
    chat_template: str | None = None  # overrides the model's own (a Jinja string)
    # auto: what the model folder's lite_config.json says (written by `lite convert --kv`), else none
    kv_cache_dtype: str = "auto"  # auto | none | int8 | int4
    # W4A16 checkpoints: run the output head, which AWQ leaves in float, as int8 per channel where the
    # backend has the kernel (llama.cpp's 4-bit files keep an 8-bit head too); False keeps it as is.
    quantize_lm_head: bool = True
    enforce_eager: bool = False  # never replay captured graphs, even where the backend has them
    # Launch each step before the previous one's tokens reach the host, so the host's work
    # (scheduling, detokenizing, stop checks) overlaps the device's. None: where the backend's
    # forward passes run ahead of the host (CUDA); a CPU forward blocks, so there is nothing to hide.
    async_scheduling: bool | None = None
    load_format: str = "auto"  # auto: the checkpoint's weights; dummy: random ones of its shapes (benchmarks)

    def __post_init__(self):
        if self.load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format must be auto or dummy, got {self.load_format!r}")
        if self.kv_cache_dtype not in ("auto", *KV_CACHE_DTYPES):
            raise ValueError(f"kv_cache_dtype must be one of auto, {', '.join(KV_CACHE_DTYPES)}; "
                             f"got {self.kv_cache_dtype!r}")


# What `lite convert` records beside config.json for lite alone (other tools ignore the file).
LITE_CONFIG_FILE = "lite_config.json"
KV_CACHE_DTYPES = ("none", "int8", "int4")


def read_lite_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / LITE_CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_kv_cache_dtype(requested: str, folder: str | os.PathLike) -> str:
    if requested != "auto":
        return requested
    recorded = read_lite_config(folder).get("kv_cache_dtype", "none")
    if recorded not in KV_CACHE_DTYPES:
        raise ValueError(f"{Path(folder) / LITE_CONFIG_FILE} has kv_cache_dtype {recorded!r}; "
                         f"expected one of {', '.join(KV_CACHE_DTYPES)}")
    return recorded
