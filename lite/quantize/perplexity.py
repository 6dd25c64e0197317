"""Perplexity of a text under an engine: the quality figure of `lite convert --eval` and the tests.

The text is scored through the serving path itself (the backend's linears, paged attention and
KV cache, quantized or not) in windows of `window` tokens, each fed in chunks of `chunk` tokens:
every chunk after the first attends to the earlier ones through the KV cache, so an int8/int4
cache shows in the figure as it would while serving.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from lite.backends.base import BatchLayout, ForwardContext
from lite.engine.engine import LLMEngine
from lite.engine.sequence import SamplingParams, Sequence


@torch.inference_mode()
def perplexity(engine: LLMEngine, text: str, window: int = 512, chunk: int = 32,
               show_progress: bool = True) -> float:
    if engine.has_unfinished():
        raise ValueError("perplexity needs an idle engine: it borrows KV blocks for its windows")
    token_ids = engine.tokenizer.encode(text, add_special_tokens=False)
    window = min(window, engine.max_model_len)
    windows = [token_ids[i:i + window] for i in range(0, len(token_ids), window)]
    windows = [w for w in windows if len(w) > 1]
    if not windows:
        raise ValueError("the evaluation text is shorter than two tokens")
    total_nll, count = 0.0, 0
    for tokens in tqdm(windows, desc="Perplexity", unit="window", disable=not show_progress):
        nll, n = _score_window(engine, tokens, chunk)
        total_nll, count = total_nll + nll, count + n
    return math.exp(total_nll / count)


def _score_window(engine: LLMEngine, tokens: list[int], chunk: int) -> tuple[float, int]:
    """Sum of -log p(token | earlier tokens of the window) over tokens 1.. of the window."""
    runner, block_manager, block_size = engine.runner, engine.block_manager, engine.block_size
    # Blocks come from the block manager like any request's and go back unhashed, so the prefix
    # cache never points at what this scoring wrote.
    seq = Sequence(tokens, SamplingParams(max_tokens=1))
    if not block_manager.allocate_slots(seq, len(tokens)):
        raise ValueError(f"the KV cache cannot hold a {len(tokens)}-token window; raise --kv-cache-memory")
    try:
        nll = 0.0
        targets = torch.tensor(tokens[1:])
        for start in range(0, len(tokens) - 1, chunk):
            end = min(start + chunk, len(tokens) - 1)
            slots = [seq.block_ids[p // block_size] * block_size + p % block_size for p in range(start, end)]
            layout = BatchLayout([end - start], [end], [seq.block_ids], slots, block_size)
            ctx = ForwardContext(runner.attention, runner.attention.build_metadata(layout), runner.kv_caches)
            ids = torch.tensor(tokens[start:end], device=engine.backend.device)
            positions = torch.arange(start, end, device=engine.backend.device)
            logits = runner.model.compute_logits(runner.model(ids, positions, ctx)).float().cpu()
            log_probs = torch.log_softmax(logits, dim=-1)
            nll -= log_probs.gather(1, targets[start:end].unsqueeze(1)).sum().item()
        return nll, len(tokens) - 1
    finally:
        block_manager.free(seq)
