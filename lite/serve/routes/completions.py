"""POST /v1/completions: text in, text out; one or several prompts, n choices each."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request

from lite.engine.outputs import RequestOutput
from lite.serve.errors import APIError
from lite.serve.generation import ChoiceSpec, GenerationPlan, collect_choices, stream_choices
from lite.serve.protocol import (CompletionChoice, CompletionRequest, CompletionResponse, ErrorResponse,
                                 Usage)
from lite.serve.sampling import check_prompt_length, choice_params, resolve_max_tokens
from lite.serve.state import ServerState, get_state
from lite.serve.streaming import DONE, EventStream, sse

router = APIRouter()
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the completions API
ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 503)}


@router.post("/v1/completions", response_model=CompletionResponse, responses=ERROR_RESPONSES)
async def create_completion(body: CompletionRequest, request: Request,
                            state: ServerState = Depends(get_state)):
    arrival = time.perf_counter()
    state.check_model(body.model)
    plan, prompt_texts = await _plan(state, body, arrival)
    admission = state.gate.acquire(len(plan.choices))
    if body.stream:
        return EventStream(_completion_events(state, body, plan, prompt_texts), admission.release)
    try:
        finals = await collect_choices(state, plan, request)
    finally:
        admission.release()
    choices = [_choice(state, body, plan, index, finals[index], prompt_texts) for index in range(len(finals))]
    return CompletionResponse(id=plan.request_id, model=body.model, choices=choices,
                              usage=_usage(plan, finals.values()))


def _prompt_token_ids(state: ServerState, body: CompletionRequest) -> list[list[int]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return [state.tokenizer.encode(prompt)]
    if isinstance(prompt[0], str):
        return [state.tokenizer.encode(text) for text in prompt]
    token_lists = [prompt] if isinstance(prompt[0], int) else prompt
    for token_ids in token_lists:
        if any(not 0 <= t < state.vocab_size for t in token_ids):
            raise APIError(400, f"prompt token ids must lie in [0, {state.vocab_size})", param="prompt")
    return [list(ids) for ids in token_lists]


async def _plan(state: ServerState, body: CompletionRequest, arrival: float
                ) -> tuple[GenerationPlan, list[str]]:
    if body.suffix:
        raise APIError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")
    if body.best_of not in (None, body.n):
        raise APIError(400, "best_of other than n is not supported", param="best_of")
    if body.echo and body.logprobs is not None:
        raise APIError(400, "echo with logprobs (prompt logprobs) is not supported", param="echo")
    prompts = await asyncio.to_thread(_prompt_token_ids, state, body)  # long texts: off the event loop
    choices = []
    for token_ids in prompts:
        check_prompt_length(len(token_ids), state.max_model_len)
        max_tokens = resolve_max_tokens(body.max_tokens, len(token_ids), state.max_model_len,
                                        default=DEFAULT_MAX_TOKENS)
        params = choice_params(body, max_tokens=max_tokens, logprobs=body.logprobs,
                               vocab_size=state.vocab_size)
        for p in params:
            choices.append(ChoiceSpec(len(choices), token_ids, p))
    echoes = [state.tokenizer.decode(c.prompt_token_ids) if body.echo else "" for c in choices]
    return GenerationPlan.new("cmpl", choices, arrival), echoes


def _choice(state: ServerState, body: CompletionRequest, plan: GenerationPlan, index: int,
            output: RequestOutput, echoes: list[str]) -> CompletionChoice:
    logprobs = state.logprobs.completion(output.logprobs, 0) if output.logprobs is not None else None
    return CompletionChoice(index=index, text=echoes[index] + output.text, logprobs=logprobs,
                            finish_reason=output.finish_reason)


def _usage(plan: GenerationPlan, finals) -> Usage:
    # Each prompt counts once however many choices it has.
    prompts = {id(c.prompt_token_ids): len(c.prompt_token_ids) for c in plan.choices}
    num_prompt_tokens, num_output_tokens = sum(prompts.values()), sum(len(o.token_ids) for o in finals)
    return Usage(prompt_tokens=num_prompt_tokens, completion_tokens=num_output_tokens,
                 total_tokens=num_prompt_tokens + num_output_tokens)


async def _completion_events(state: ServerState, body: CompletionRequest, plan: GenerationPlan,
                             echoes: list[str]):
    created = int(time.time())

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        return sse(CompletionResponse(id=plan.request_id, created=created, model=body.model,
                                      choices=choices, usage=usage))

    num_logprobs_sent = [0] * len(plan.choices)
    num_chars_sent = [0] * len(plan.choices)
    finals = []
    stream = stream_choices(state, plan)
    try:
        async for index, output in stream:
            text = output.delta_text
            if echoes[index] and num_chars_sent[index] == 0:
                text = echoes[index] + text
            logprobs = None
            if output.logprobs is not None and len(output.logprobs) > num_logprobs_sent[index]:
                logprobs = state.logprobs.completion(output.logprobs[num_logprobs_sent[index]:],
                                                     num_chars_sent[index])
                num_logprobs_sent[index] = len(output.logprobs)
            num_chars_sent[index] += len(text)
            if output.finished:
                finals.append(output)
            if text or logprobs or output.finished:
                yield chunk([CompletionChoice(index=index, text=text, logprobs=logprobs,
                                              finish_reason=output.finish_reason)])
    finally:
        await stream.aclose()
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], _usage(plan, finals))
    yield DONE
