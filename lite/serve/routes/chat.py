"""POST /v1/chat/completions: chat template, tools, structured output, streaming."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request

from lite.engine.outputs import RequestOutput
from lite.serve import tool_calls
from lite.serve.chat_prompt import render_chat_prompt
from lite.serve.errors import APIError
from lite.serve.generation import ChoiceSpec, GenerationPlan, collect_choices, stream_choices
from lite.serve.protocol import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk,
                                 ChatCompletionRequest, ChatCompletionResponse, ChatDelta, ErrorResponse,
                                 FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta, Usage)
from lite.serve.sampling import check_prompt_length, choice_params, resolve_max_tokens
from lite.serve.state import ServerState, get_state
from lite.serve.streaming import DONE, EventStream, sse
from lite.serve.structured_output import response_format_grammar, tool_call_grammar

router = APIRouter()
ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 503)}


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=ERROR_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 state: ServerState = Depends(get_state)):
    arrival = time.perf_counter()
    state.check_model(body.model)
    plan, parses_tools = await _plan(state, body, arrival)
    admission = state.gate.acquire(len(plan.choices))
    if body.stream:
        return EventStream(_chat_events(state, body, plan, parses_tools), admission.release)
    try:
        finals = await collect_choices(state, plan, request)
    finally:
        admission.release()
    return _chat_response(state, body, plan, finals, parses_tools)


async def _plan(state: ServerState, body: ChatCompletionRequest, arrival: float
                ) -> tuple[GenerationPlan, bool]:
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs")
    tool_choice = body.tool_choice or ("auto" if body.tools else "none")
    if tool_choice != "none" and not body.tools:
        raise APIError(400, "tool_choice needs tools", param="tool_choice")
    parses_tools = tool_choice != "none"
    tool_grammar = tool_call_grammar(body.tools, tool_choice) if parses_tools else None
    format_grammar = response_format_grammar(body.response_format)
    if tool_grammar and format_grammar:
        raise APIError(400, "a forced tool_choice and a JSON response_format cannot both constrain "
                            "the answer; drop one", param="response_format")
    grammar = tool_grammar or format_grammar
    grammar_source = "tools" if tool_grammar else "response_format"
    # Templating and tokenizing a long conversation takes a while: off the event loop.
    prompt_ids = await asyncio.to_thread(render_chat_prompt, state.tokenizer, body.messages,
                                         body.tools if parses_tools else None)
    check_prompt_length(len(prompt_ids), state.max_model_len)
    max_tokens = resolve_max_tokens(body.max_completion_tokens or body.max_tokens, len(prompt_ids),
                                    state.max_model_len)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = choice_params(body, max_tokens=max_tokens, logprobs=logprobs, vocab_size=state.vocab_size)
    processors = [None] * body.n
    if grammar:  # compiling may take a while for a large schema: keep the event loop free
        processors = await asyncio.to_thread(state.grammars.processors, grammar, body.n, grammar_source)
    choices = [ChoiceSpec(i, prompt_ids, p, proc) for i, (p, proc) in enumerate(zip(params, processors))]
    return GenerationPlan.new("chatcmpl", choices, arrival), parses_tools


def _finish_reason(output: RequestOutput, num_calls: int) -> str:
    return "tool_calls" if num_calls and output.finish_reason == "stop" else output.finish_reason


def _usage(plan: GenerationPlan, num_output_tokens: int) -> Usage:
    num_prompt_tokens = len(plan.choices[0].prompt_token_ids)  # one prompt, counted once for n choices
    return Usage(prompt_tokens=num_prompt_tokens, completion_tokens=num_output_tokens,
                 total_tokens=num_prompt_tokens + num_output_tokens)


def _chat_response(state: ServerState, body: ChatCompletionRequest, plan: GenerationPlan,
                   finals: dict[int, RequestOutput], parses_tools: bool) -> ChatCompletionResponse:
    choices = []
    for index in range(len(plan.choices)):
        output = finals[index]
        content, calls = tool_calls.parse_tool_calls(output.text) if parses_tools else (output.text, [])
        calls = calls[:_max_calls(body)]
        message = AssistantMessage(
            content=(content.strip() or None) if calls else content,
            tool_calls=[ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
                        for c in calls])
        logprobs = state.logprobs.chat(output.logprobs) if output.logprobs is not None else None
        choices.append(ChatChoice(index=index, message=message, logprobs=logprobs,
                                  finish_reason=_finish_reason(output, len(calls))))
    return ChatCompletionResponse(id=plan.request_id, model=body.model, choices=choices,
                                  usage=_usage(plan, sum(len(o.token_ids) for o in finals.values())))


def _max_calls(body: ChatCompletionRequest) -> int | None:
    """parallel_tool_calls=false: the first call only (None: no limit)."""
    return 1 if body.parallel_tool_calls is False else None


def _delta_from_events(events: list, max_calls: int | None) -> ChatDelta:
    content = "".join(e.text for e in events if isinstance(e, tool_calls.ContentDelta))
    deltas: list[ToolCallDelta] = []
    for event in events:
        if not isinstance(event, tool_calls.ToolCallDelta) or (max_calls is not None and event.index >= max_calls):
            continue
        if deltas and deltas[-1].index == event.index:  # one delta per call and chunk
            deltas[-1].function.arguments += event.arguments
            continue
        deltas.append(ToolCallDelta(index=event.index, id=event.id, type="function" if event.id else None,
                                    function=FunctionCallDelta(name=event.name, arguments=event.arguments)))
    return ChatDelta(content=content or None, tool_calls=deltas or None)


async def _chat_events(state: ServerState, body: ChatCompletionRequest, plan: GenerationPlan,
                       parses_tools: bool):
    num_choices = len(plan.choices)
    created = int(time.time())

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        return sse(ChatCompletionChunk(id=plan.request_id, created=created, model=body.model,
                                       choices=choices, usage=usage))

    yield chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))
                 for i in range(num_choices)])
    parsers = [tool_calls.ToolCallParser() for _ in range(num_choices)] if parses_tools else None
    num_logprobs_sent = [0] * num_choices
    num_output_tokens = 0
    stream = stream_choices(state, plan)
    try:
        async for index, output in stream:
            if parsers:
                events = parsers[index].feed(output.delta_text)
                delta = _delta_from_events(events + (parsers[index].finish() if output.finished else []),
                                           _max_calls(body))
            else:
                delta = ChatDelta(content=output.delta_text or None)
            logprobs = None
            if output.logprobs is not None and len(output.logprobs) > num_logprobs_sent[index]:
                logprobs = state.logprobs.chat(output.logprobs[num_logprobs_sent[index]:])
                num_logprobs_sent[index] = len(output.logprobs)
            finish_reason = None
            if output.finished:
                finish_reason = _finish_reason(output, parsers[index].num_calls if parsers else 0)
                num_output_tokens += len(output.token_ids)
            if delta.content or delta.tool_calls or logprobs or finish_reason:
                yield chunk([ChatChunkChoice(index=index, delta=delta, logprobs=logprobs,
                                             finish_reason=finish_reason)])
    finally:
        await stream.aclose()
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], _usage(plan, num_output_tokens))
    yield DONE
