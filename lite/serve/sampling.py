"""OpenAI request fields -> the engine's SamplingParams, one per choice, with 400s that name the field."""
from __future__ import annotations

from lite.engine.sequence import SamplingParams
from lite.serve.errors import APIError
from lite.serve.protocol import SamplingFields


def check_prompt_length(num_prompt_tokens: int, max_model_len: int) -> None:
    if num_prompt_tokens == 0:
        raise APIError(400, "the prompt is empty: give at least one token of text", param="prompt")
    if num_prompt_tokens >= max_model_len:
        raise APIError(400, f"the prompt has {num_prompt_tokens} tokens but this model's context holds "
                            f"{max_model_len} (--max-model-len), with room for at least one new token; "
                            "shorten the prompt", param="messages", code="context_length_exceeded")


def resolve_max_tokens(requested: int | None, num_prompt_tokens: int, max_model_len: int,
                       default: int | None = None) -> int:
    """The request's max_tokens, else `default` or all the context left (whichever is less); asking
    for more than the context holds is an error, as at OpenAI."""
    room = max_model_len - num_prompt_tokens
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise APIError(400, f"this model's context holds {max_model_len} tokens, but the request needs "
                            f"{num_prompt_tokens + requested} ({num_prompt_tokens} in the prompt, "
                            f"{requested} for the completion); lower max_tokens or shorten the prompt",
                       param="max_tokens", code="context_length_exceeded")
    return requested


def parse_logit_bias(logit_bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    result = {}
    for key, bias in (logit_bias or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            raise APIError(400, f"logit_bias keys are token ids; got {key!r}", param="logit_bias") from None
        if not 0 <= token_id < vocab_size:
            raise APIError(400, f"logit_bias token id {token_id} is outside the vocabulary "
                                f"[0, {vocab_size})", param="logit_bias")
        if not -100.0 <= bias <= 100.0:
            raise APIError(400, f"logit_bias values lie in [-100, 100]; got {bias}", param="logit_bias")
        result[token_id] = bias
    return result


def choice_params(request: SamplingFields, *, max_tokens: int, logprobs: int | None,
                  vocab_size: int) -> list[SamplingParams]:
    """One SamplingParams per choice. With a seed, choice i draws from seed + i: the n choices
    differ from each other, and the same request gives the same n answers again."""
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or ())
    bias = parse_logit_bias(request.logit_bias, vocab_size)
    try:
        return [SamplingParams(
            max_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
            top_k=max(request.top_k, 0), min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
            seed=None if request.seed is None else request.seed + i, stop=tuple(stop),
            ignore_eos=request.ignore_eos, logprobs=logprobs, logit_bias=bias)
            for i in range(request.n)]
    except ValueError as exc:
        raise APIError(400, str(exc)) from exc
