"""Turn last-token logits into next tokens under each request's SamplingParams."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lite.engine.sequence import SamplingParams, Sequence


@dataclass
class SampleResult:
    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None  # (token id, logprob), best first


class Sampler:
    def __init__(self, seed: int = 0):
        # Draws for requests without a seed; seeded requests get their own, see _generator.
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[SampleResult]:
        """logits: [len(seqs), vocab] float32 on the model's device, one row per sequence that
        samples. A plain greedy batch is decided there and only token ids cross to the host."""
        params = [s.sampling_params for s in seqs]
        if all(p.is_greedy and not p.has_penalties and p.logprobs is None and not p.logit_bias
               and s.logits_processor is None for p, s in zip(params, seqs)):
            return [SampleResult(token_id) for token_id in logits.argmax(dim=-1).tolist()]
        logits = logits.cpu()
        want_logprobs = any(p.logprobs is not None for p in params)
        # Logprobs report the model's own distribution, before biases and grammar masks.
        raw_logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        for i, seq in enumerate(seqs):
            if seq.sampling_params.logit_bias or seq.logits_processor is not None:
                adjust_logits(logits[i], seq)
        if all(p.is_greedy and not p.has_penalties for p in params):
            token_ids = logits.argmax(dim=-1).tolist()
        else:
            token_ids = [self._sample_row(logits[i].clone(), seq) for i, seq in enumerate(seqs)]
        results = []
        for i, (token_id, p) in enumerate(zip(token_ids, params)):
            result = SampleResult(token_id)
            if p.logprobs is not None:
                row = raw_logprobs[i]
                result.logprob = row[token_id].item()
                if p.logprobs:
                    values, ids = row.topk(p.logprobs)
                    result.top_logprobs = list(zip(ids.tolist(), values.tolist()))
            results.append(result)
        return results

    def _sample_row(self, logits: torch.Tensor, seq: Sequence) -> int:
        p = seq.sampling_params
        if p.has_penalties:
            apply_penalties(logits, seq)
        if p.is_greedy:
            return int(logits.argmax())
        logits = logits / p.temperature
        if p.top_k:
            kth = logits.topk(min(p.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            outside = (sorted_probs.cumsum(0) - sorted_probs) >= p.top_p
            probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        # Exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p (renormalizing is moot).
        noise = torch.empty_like(probs).exponential_(generator=self._generator(seq))
        return int((probs / noise).argmax())

    def _generator(self, seq: Sequence) -> torch.Generator:
        seed = seq.sampling_params.seed
        if seed is None:
            return self.generator
        # Stateless per step: the same seed gives the same tokens whatever else is in the batch,
        # and a preempted request recomputes to the same draws.
        return torch.Generator().manual_seed((seed * 1_000_003 + seq.num_output_tokens) % (1 << 63))


def adjust_logits(logits: torch.Tensor, seq: Sequence) -> None:
    """In place on one row: the request's logit_bias, then its logits processor (which may mask)."""
    if seq.sampling_params.logit_bias:
        token_ids, biases = zip(*seq.sampling_params.logit_bias)
        logits[list(token_ids)] += torch.tensor(biases, dtype=logits.dtype)
    if seq.logits_processor is not None:
        seq.logits_processor(seq.output_token_ids, logits)


def apply_penalties(logits: torch.Tensor, seq: Sequence) -> None:
    """In place on one row. Repetition (Hugging Face/CTRL style) counts prompt and output tokens;
    presence and frequency (OpenAI style) count output tokens only."""
    p: SamplingParams = seq.sampling_params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long)
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.num_output_tokens:
        counts = torch.bincount(torch.tensor(seq.output_token_ids), minlength=logits.numel())
        counts = counts[:logits.numel()].to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
