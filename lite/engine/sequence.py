"""Requests as the engine sees them: sampling parameters and the sequence state machine.

No torch here: the scheduler and block manager work on these objects alone.
"""
from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # number of top logprobs to return besides the sampled token's
    # (token id, bias) pairs added to the logits before sampling; a dict is accepted and sorted.
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        object.__setattr__(self, "logit_bias", tuple(sorted((int(t), float(b)) for t, b in bias)))
        problems = []
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            problems.append(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 100.0:
            problems.append(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            problems.append(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not 0.0 <= self.min_p <= 1.0:
            problems.append(f"min_p must be in [0, 1], got {self.min_p!r}")
        if self.repetition_penalty <= 0.0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                problems.append(f"{name} must be in [-2, 2], got {getattr(self, name)!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            problems.append(f"logprobs must be in [0, 20], got {self.logprobs!r}")
        if any(not s for s in self.stop):
            problems.append("stop strings must be non-empty")
        if any(token_id < 0 or not -100.0 <= bias <= 100.0 for token_id, bias in self.logit_bias):
            problems.append("logit_bias maps token ids >= 0 to biases in [-100, 100]")
        if problems:
            raise ValueError("invalid sampling parameters: " + "; ".join(problems))

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # eos, stop token id or stop string
    LENGTH = "length"  # max_tokens or the context length
    ABORT = "abort"


_seq_ids = itertools.count()

# The token id a sequence holds for a token sampled on the device but not yet read back: under
# async scheduling the next step is launched first, and feeds the draw to the model on the device.
UNRESOLVED = -1


@dataclass(eq=False)
class Sequence:
    """One prompt and its generated tokens.

    `num_computed_tokens` counts the tokens whose KV is in the cache; the scheduler advances it,
    the block manager sets it on a prefix-cache hit and preemption resets it to zero.
    """
    prompt_token_ids: list[int]
    sampling_params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    seq_id: int = field(default_factory=lambda: next(_seq_ids))
    arrival_time: float = field(default_factory=time.monotonic)
    # Optional [num_prompt_tokens, hidden] embeddings that replace the prompt's token embeddings
    # (vision features merged in); tensors stay opaque to the scheduler.
    prompt_embeds: object | None = None
    # Optional callable(output_token_ids, logits_row) that edits the [vocab] logits in place before
    # sampling, e.g. a grammar matcher. Per sequence, because such processors carry state.
    logits_processor: object | None = None

    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    token_ids: list[int] = field(init=False)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at the last admission
    block_ids: list[int] = field(default_factory=list)
    num_preemptions: int = 0
    output_logprobs: list = field(default_factory=list)

    def __post_init__(self):
        if not self.prompt_token_ids:
            raise ValueError("the prompt is empty: give at least one token")
        self.prompt_token_ids = list(self.prompt_token_ids)
        self.token_ids = list(self.prompt_token_ids)
        if not self.request_id:
            self.request_id = str(self.seq_id)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def reads_own_tokens(self) -> bool:
        """Whether sampling reads this sequence's earlier tokens (penalties, a grammar): then its
        step cannot be launched before the previous step's token reaches the host."""
        return self.sampling_params.has_penalties or self.logits_processor is not None

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
