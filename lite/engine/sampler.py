"""Turn last-token logits into next tokens under each request's SamplingParams.

The whole batch is sampled at once on the logits' device; only the chosen token ids (and any
logprobs asked for) cross to the host. Top-k and top-p look at the TOP_CANDIDATES likeliest tokens
found with topk instead of sorting the vocabulary, and sort only a row whose nucleus is wider than
that. Draws are exponential races, argmax(p / E), whose noise E is a hash of (request seed, output
position, token id): a seeded request samples the same tokens whatever else is in the batch, after
a preemption, and on any device.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from lite.engine.sequence import SamplingParams, Sequence

TOP_CANDIDATES = 1024
_MASK32 = 0xFFFFFFFF


@dataclass
class SampleResult:
    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None  # (token id, logprob), best first


@dataclass
class Draws:
    """One step's sampled tokens, and the logprobs asked for, as tensors: on the logits' device
    when the sampler returns them, so the host can read them a step later (async scheduling)."""
    params: list[SamplingParams]
    token_ids: torch.Tensor  # [rows] int64
    chosen_logprobs: torch.Tensor | None = None  # [rows]: the sampled tokens' own
    top_logprobs: torch.Tensor | None = None  # [rows, most requested], best first
    top_ids: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "params" and getattr(self, f.name) is not None}

    def results(self) -> list[SampleResult]:
        """Per-row results; reading device tensors here waits for the device."""
        results = [SampleResult(token_id) for token_id in self.token_ids.tolist()]
        if self.chosen_logprobs is None:
            return results
        chosen = self.chosen_logprobs.tolist()
        top_values = self.top_logprobs.tolist() if self.top_logprobs is not None else None
        top_ids = self.top_ids.tolist() if self.top_ids is not None else None
        for i, (result, p) in enumerate(zip(results, self.params)):
            if p.logprobs is not None:
                result.logprob = chosen[i]
                if p.logprobs:
                    result.top_logprobs = list(zip(top_ids[i][:p.logprobs], top_values[i][:p.logprobs]))
        return results


class Sampler:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self.num_draws = 0  # keys the noise of requests without a seed of their own

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> Draws:
        """logits: [len(seqs), vocab] float32 on the model's device, one row per sequence that samples."""
        params = [s.sampling_params for s in seqs]
        if all(p.is_greedy and not p.has_penalties and p.logprobs is None and not p.logit_bias
               and s.logits_processor is None for p, s in zip(params, seqs)):
            return Draws(params, logits.argmax(dim=-1))
        # Logprobs report the model's own distribution, before penalties, biases and grammar masks.
        raw_logprobs = torch.log_softmax(logits, dim=-1) if any(p.logprobs is not None for p in params) else None
        for i, seq in enumerate(seqs):
            if seq.sampling_params.has_penalties:
                apply_penalties(logits[i], seq)
            if seq.sampling_params.logit_bias or seq.logits_processor is not None:
                adjust_logits(logits[i], seq)
        if all(p.is_greedy for p in params):
            token_ids = logits.argmax(dim=-1)
        else:
            token_ids = sample(logits, params, self._noise_keys(seqs))
        return _draws(token_ids, raw_logprobs, params)

    def _noise_keys(self, seqs: list[Sequence]) -> list[int]:
        keys = []
        for row, seq in enumerate(seqs):
            seed = seq.sampling_params.seed
            if seed is None:
                keys.append(_mix(self.seed, self.num_draws, row))
            else:
                # Stateless per step: the same seed gives the same tokens whatever else is in the batch,
                # and a preempted request recomputes to the same draws.
                keys.append(_mix(seed, seq.num_output_tokens))
        self.num_draws += 1
        return keys


def sample(logits: torch.Tensor, params: list[SamplingParams], noise_keys: list[int]) -> torch.Tensor:
    """One token id per row of logits [batch, vocab]; greedy rows take the argmax.

    The rows' settings go over in non-blocking copies and the rows to restrict are picked on the
    host, so that sampling queues behind the forward pass instead of waiting for it (async
    scheduling); only a row that may need its whole vocabulary sorted waits for the device."""
    device, vocab = logits.device, logits.shape[-1]
    temperature, top_p, min_p = _on(device, [[p.temperature, p.top_p, p.min_p] for p in params], torch.float32).T
    top_k, keys = _on(device, [[p.top_k or vocab, k] for p, k in zip(params, noise_keys)], torch.int64).T
    keys = keys.unsqueeze(1)
    greedy = temperature == 0
    probs = torch.softmax(logits / torch.where(greedy, 1.0, temperature).unsqueeze(1), dim=-1)

    token_ids = logits.argmax(dim=-1)
    # Top-k and top-p rows draw among their likeliest tokens, found with topk; a row whose nucleus
    # is wider than those (a flat distribution) sorts the vocabulary. Rows with neither top-k nor
    # top-p draw from the whole vocabulary.
    has_top_k = [0 < p.top_k < vocab for p in params]
    restricted_rows = [i for i, p in enumerate(params) if p.temperature and (has_top_k[i] or p.top_p < 1.0)]
    if restricted_rows:
        restricted = _on(device, restricted_rows, torch.int64)
        num_candidates = min(vocab, max(TOP_CANDIDATES, max(p.top_k for p in params)))
        top_probs, top_ids = probs[restricted].topk(num_candidates, dim=-1)
        keep = _kept(top_probs, top_k[restricted], top_p[restricted], min_p[restricted])
        token_ids[restricted] = top_ids.gather(1, _race(top_probs * keep, keys[restricted], top_ids)).squeeze(1)
        if not all(has_top_k[i] for i in restricted_rows):
            wide = restricted[(top_k[restricted] >= vocab) & (top_probs.sum(dim=-1) < top_p[restricted])]
            if wide.numel():
                sorted_probs, order = probs[wide].sort(dim=-1, descending=True)
                keep = torch.zeros_like(order, dtype=torch.bool).scatter_(
                    1, order, _kept(sorted_probs, top_k[wide], top_p[wide], min_p[wide]))
                token_ids[wide] = _race(probs[wide] * keep, keys[wide], _vocab_ids(vocab, device)).squeeze(1)
    whole_rows = [i for i, p in enumerate(params) if p.temperature and not has_top_k[i] and p.top_p >= 1.0]
    if whole_rows:
        whole = _on(device, whole_rows, torch.int64)
        keep = probs[whole] >= min_p[whole].unsqueeze(1) * probs[whole].amax(dim=-1, keepdim=True)
        token_ids[whole] = _race(probs[whole] * keep, keys[whole], _vocab_ids(vocab, device)).squeeze(1)
    return token_ids


def _on(device: torch.device, values: list, dtype: torch.dtype) -> torch.Tensor:
    # A copy from pageable memory that does not wait for the device's queue (cudaMemcpyAsync
    # stages it); a blocking one would wait for the forward pass in flight.
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _vocab_ids(vocab: int, device: torch.device) -> torch.Tensor:
    return torch.arange(vocab, device=device).unsqueeze(0)


def _kept(sorted_probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Which of each row's probabilities (sorted, best first) survive top-k, top-p and min-p. Top-p
    keeps the smallest prefix whose mass reaches it: a token stays while the mass before it is short."""
    ranks = torch.arange(sorted_probs.shape[-1], device=sorted_probs.device)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    return ((ranks.unsqueeze(0) < top_k.unsqueeze(1)) & (mass_before < top_p.unsqueeze(1))
            & (sorted_probs >= min_p.unsqueeze(1) * sorted_probs[:, :1]))


def _race(weights: torch.Tensor, keys: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Index of argmax(w / E) per row, E ~ Exp(1) keyed by (row key, token id): draws from w / sum(w)."""
    return (weights / -torch.log(_uniform(keys, token_ids))).argmax(dim=-1, keepdim=True)


def _uniform(keys: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """A uniform in (0, 1) per (key, token id): an integer hash in int64 tensor arithmetic that keeps
    every product below 2**63, so it gives the same bits on every device."""
    x = (token_ids * 0x9E3779B1 + keys) & _MASK32
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (x >> 16) ^ x
    return ((x >> 8).to(torch.float32) + 0.5) / float(1 << 24)


def _mix(*values: int) -> int:
    """A 32-bit key from a few integers (splitmix64 steps)."""
    state = 0
    for value in values:
        state = (state + value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & _MASK32


def _draws(token_ids: torch.Tensor, raw_logprobs: torch.Tensor | None, params: list[SamplingParams]) -> Draws:
    if raw_logprobs is None:
        return Draws(params, token_ids)
    chosen = raw_logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
    most = max(p.logprobs or 0 for p in params)
    top_values, top_ids = raw_logprobs.topk(most, dim=-1) if most else (None, None)
    return Draws(params, token_ids, chosen, top_values, top_ids)


def adjust_logits(logits: torch.Tensor, seq: Sequence) -> None:
    """In place on one row: the request's logit_bias, then its logits processor (which may mask)."""
    if seq.sampling_params.logit_bias:
        token_ids, biases = zip(*seq.sampling_params.logit_bias)
        logits[list(token_ids)] += torch.tensor(biases, dtype=logits.dtype, device=logits.device)
    if seq.logits_processor is not None:
        seq.logits_processor(seq.output_token_ids, logits)


def apply_penalties(logits: torch.Tensor, seq: Sequence) -> None:
    """In place on one row. Repetition (Hugging Face/CTRL style) counts prompt and output tokens;
    presence and frequency (OpenAI style) count output tokens only."""
    p: SamplingParams = seq.sampling_params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long, device=logits.device)
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.num_output_tokens:
        counts = torch.bincount(torch.tensor(seq.output_token_ids, device=logits.device), minlength=logits.numel())
        counts = counts[:logits.numel()].to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
