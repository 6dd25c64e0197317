"""The batched sampler on the GPU: the same draws as on the CPU for the same logits and seeds."""
from __future__ import annotations

import pytest
import torch

from . import gpu_helpers  # noqa: F401  (skips this module without a GPU)

from lite.engine.sampler import TOP_CANDIDATES, Sampler  # noqa: E402
from lite.engine.sequence import SamplingParams, Sequence  # noqa: E402

pytestmark = pytest.mark.usefixtures("needs_cuda")


def test_seeded_rows_draw_the_same_tokens_on_cuda_and_cpu():
    torch.manual_seed(0)
    vocab = 128256
    logits = torch.randn(6, vocab) * 4
    logits[5] = torch.linspace(0, 0.01, vocab)  # flat: its nucleus is wider than the candidates
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.7, top_k=50, seed=1),
              SamplingParams(temperature=1.0, top_p=0.9, seed=2), SamplingParams(temperature=1.0, seed=3),
              SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.02, seed=4),
              SamplingParams(temperature=1.0, top_p=0.5, seed=5)]
    seqs = [Sequence([1, 2, 3], p) for p in params]
    on_cpu = [r.token_id for r in Sampler()(logits.clone(), seqs).results()]
    on_cuda = [r.token_id for r in Sampler()(logits.cuda(), seqs).results()]
    assert on_cuda == on_cpu
    assert logits[5].softmax(-1).sort(descending=True).values[:TOP_CANDIDATES].sum() < 0.5
