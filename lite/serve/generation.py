"""Run a request's choices as engine sequences and merge their outputs, as a stream or to the end.

Each choice (n per prompt) is its own engine sequence with its own request id; they run
concurrently and are continuously batched with everything else. Leaving the merged stream early
(client gone, error, shutdown) cancels every choice, which aborts its sequence and frees its KV
blocks.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request

from lite.engine.async_engine import EngineDeadError
from lite.engine.outputs import RequestOutput
from lite.engine.sequence import SamplingParams
from lite.serve.errors import APIError, ClientDisconnected
from lite.serve.metrics import SequenceTimer
from lite.serve.state import ServerState

logger = logging.getLogger("lite.serve")

DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


@dataclass
class ChoiceSpec:
    index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    logits_processor: object | None = None


@dataclass
class GenerationPlan:
    request_id: str
    choices: list[ChoiceSpec]
    arrival: float  # time.perf_counter() when the request came in: latencies count from here

    @classmethod
    def new(cls, prefix: str, choices: list[ChoiceSpec], arrival: float) -> GenerationPlan:
        return cls(f"{prefix}-{uuid.uuid4().hex}", choices, arrival)


async def stream_choices(state: ServerState, plan: GenerationPlan
                         ) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(choice index, output) as outputs arrive, until every choice has finished."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(choice: ChoiceSpec) -> None:
        timer = SequenceTimer(state.metrics, plan.arrival)
        try:
            async for output in state.engine.generate(
                    choice.prompt_token_ids, choice.params, f"{plan.request_id}-{choice.index}",
                    logits_processor=choice.logits_processor):
                timer.on_output(output)
                queue.put_nowait((choice.index, output))
        except Exception as exc:  # handed to the consumer, which decides what the client sees
            queue.put_nowait((choice.index, exc))

    tasks = [asyncio.create_task(pump(choice)) for choice in plan.choices]
    finals: dict[int, RequestOutput] = {}
    try:
        while len(finals) < len(tasks):
            index, item = await queue.get()
            if isinstance(item, EngineDeadError):
                raise APIError(503, f"the server is shutting down: {item}", code="server_shutting_down")
            if isinstance(item, ValueError):
                raise APIError(400, str(item))
            if isinstance(item, Exception):
                raise item
            if item.finished:
                finals[index] = item
            yield index, item
    finally:
        # No awaiting here: a cancelled caller may not await again. Cancelling a pump closes its
        # engine stream, and closing a stream aborts the sequence on the engine thread.
        for task in tasks:
            task.cancel()
        if state.config.log_requests:
            _log_request(plan, finals)


async def collect_choices(state: ServerState, plan: GenerationPlan, request: Request
                          ) -> dict[int, RequestOutput]:
    """Every choice's final output; gives up (aborting the sequences) if the client goes away."""
    finals: dict[int, RequestOutput] = {}
    next_check = time.monotonic() + DISCONNECT_POLL_S
    stream = stream_choices(state, plan)
    try:
        async for index, output in stream:
            if output.finished:
                finals[index] = output
            if time.monotonic() >= next_check:
                if await request.is_disconnected():
                    raise ClientDisconnected(plan.request_id)
                next_check = time.monotonic() + DISCONNECT_POLL_S
    finally:
        await stream.aclose()
    return finals


def _log_request(plan: GenerationPlan, finals: dict[int, RequestOutput]) -> None:
    elapsed = time.perf_counter() - plan.arrival
    reasons = ",".join(finals[i].finish_reason for i in sorted(finals)) or "aborted"
    num_prompt_tokens = sum(len(c.prompt_token_ids) for c in plan.choices)
    num_output_tokens = sum(len(out.token_ids) for out in finals.values())
    params = plan.choices[0].params
    logger.info("%s: %d choice(s), %d prompt tokens, %d output tokens, finish %s, %.2fs "
                "(max_tokens %d, temperature %g, top_p %g, seed %s)", plan.request_id,
                len(plan.choices), num_prompt_tokens, num_output_tokens, reasons, elapsed,
                params.max_tokens, params.temperature, params.top_p, params.seed)
