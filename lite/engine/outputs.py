"""Per-request output state: detokenize, apply stop conditions, report deltas."""
from __future__ import annotations

from dataclasses import dataclass, field

from lite.engine.sampler import SampleResult
from lite.engine.sequence import FinishReason, Sequence
from lite.engine.stop import StopChecker
from lite.engine.tokenizer import IncrementalDetokenizer, Tokenizer


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]  # all generated tokens so far
    text: str  # all generated text so far, without any stop string
    delta_text: str = ""  # text new since the previous output of this request
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    logprobs: list[SampleResult] | None = None  # one per generated token, when asked for


@dataclass
class RequestState:
    seq: Sequence
    tokenizer: Tokenizer
    max_model_len: int
    detokenizer: IncrementalDetokenizer = field(init=False)
    stops: StopChecker = field(init=False)
    logprobs: list[SampleResult] | None = field(init=False)
    # The tokens reported so far: the sequence itself may already hold a draw still in flight.
    token_ids: list[int] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.detokenizer = IncrementalDetokenizer(self.tokenizer, self.seq.prompt_token_ids)
        self.stops = StopChecker(self.seq.sampling_params.stop)
        self.logprobs = [] if self.seq.sampling_params.logprobs is not None else None

    def on_token(self, sample: SampleResult) -> RequestOutput:
        """The sequence sampled `sample.token_id`: decide whether it is finished."""
        seq, params, token_id = self.seq, self.seq.sampling_params, sample.token_id
        self.token_ids.append(token_id)
        if self.logprobs is not None:
            self.logprobs.append(sample)
        reason, stop_reason, delta = None, None, ""
        if token_id in params.stop_token_ids:
            reason, stop_reason = FinishReason.STOP, token_id
        elif token_id in self.tokenizer.eos_token_ids and not params.ignore_eos:
            reason = FinishReason.STOP
        else:
            delta = self.stops.feed(self.detokenizer.feed(token_id))
            if self.stops.is_stopped:
                reason, stop_reason = FinishReason.STOP, self.stops.matched_stop
        if reason is None and (len(self.token_ids) >= params.max_tokens
                               or seq.num_prompt_tokens + len(self.token_ids) >= self.max_model_len):
            reason = FinishReason.LENGTH
        if reason is not None:
            seq.finish_reason = reason
            delta += self.stops.flush()
        return self._output(delta, reason, stop_reason)

    def finish(self, reason: FinishReason) -> RequestOutput:
        return self._output(self.stops.flush(), reason, None)

    def _output(self, delta: str, reason: FinishReason | None, stop_reason) -> RequestOutput:
        return RequestOutput(
            request_id=self.seq.request_id, prompt_token_ids=self.seq.prompt_token_ids,
            token_ids=list(self.token_ids), text=self.stops.text, delta_text=delta,
            finished=reason is not None, finish_reason=reason.value if reason else None,
            stop_reason=stop_reason, num_cached_tokens=self.seq.num_cached_tokens,
            logprobs=self.logprobs)
