"""One turn of the chat: stream an answer into the history, with its live speed, and any failure
as a sentence in the status line. No Gradio here: the UI wires these to its components."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from lite.web.errors import ChatError
from lite.web.history import to_openai_messages
from lite.web.settings import GenerationSettings
from lite.web.source import AnswerDelta, ChatSource

logger = logging.getLogger("lite.web")


@dataclass
class AnswerSpeed:
    """Tokens per second of one answer, counted from its first token (the prompt's prefill shows
    separately, as the time to that first token)."""
    started: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    num_tokens: int = 0

    def on_tokens(self, num_tokens: int, now: float) -> None:
        if num_tokens > self.num_tokens:
            self.first_token_at = self.first_token_at or now
            self.last_token_at = now
        self.num_tokens = num_tokens

    def summary(self) -> str:
        if self.first_token_at is None:
            return "waiting for the first token..."
        parts = [f"{self.num_tokens} tokens"]
        decode_s = self.last_token_at - self.first_token_at
        if self.num_tokens > 1 and decode_s > 0:
            parts.append(f"{(self.num_tokens - 1) / decode_s:.1f} tokens/s")
        parts.append(f"first token after {self.first_token_at - self.started:.2f} s")
        return " · ".join(parts)


def error_status(message: str) -> str:
    return f"⚠️ {message}"


class StopButtons:
    """One Stop signal per page session. Stop ends the answer from inside its own handler, which
    then finishes normally: the request is aborted at once, and the page gets a clean last update
    rather than the remains of a cancelled event."""

    def __init__(self):
        self._events: dict[str, asyncio.Event] = {}

    def arm(self, session: str) -> asyncio.Event:
        self._events[session] = event = asyncio.Event()
        return event

    def press(self, session: str) -> None:
        if session in self._events:
            self._events.pop(session).set()

    def disarm(self, session: str, event: asyncio.Event) -> None:
        if self._events.get(session) is event:
            del self._events[session]


async def stream_reply(source: ChatSource, history: list[dict], system_prompt: str, settings_form: tuple,
                       stop: asyncio.Event, clock: Callable[[], float] = time.perf_counter
                       ) -> AsyncIterator[tuple[list[dict] | None, str]]:
    """(history, status) after each delta; history None: unchanged. `history` ends with the user
    message to answer; the settings come as the form holds them: (temperature, top_p, max_tokens,
    stop lines). Setting `stop` aborts the request and ends the reply."""
    if not history or history[-1]["role"] != "user":
        return
    try:
        settings = GenerationSettings.from_form(*settings_form)
    except ValueError as exc:
        yield history, error_status(str(exc))
        return
    answer = {"role": "assistant", "content": ""}
    history = [*history, answer]
    speed = AnswerSpeed(started=clock())
    stream = source.stream(to_openai_messages(history[:-1], system_prompt), settings)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while (delta := await _next_delta(stream, stopped)) is not None:
            answer["content"] += delta.text
            speed.on_tokens(delta.num_tokens, clock())
            yield history, speed.summary()
        if stop.is_set():
            yield None, f"{speed.summary()} · stopped"
    except ChatError as exc:
        yield _without_empty_answer(history), error_status(str(exc))
    except Exception as exc:  # a bug or an unforeseen failure: the log has the trace, the page a line
        logger.exception("answering failed")
        yield _without_empty_answer(history), error_status(f"Answering failed: {type(exc).__name__}: {exc}")
    finally:
        stopped.cancel()
        await stream.aclose()


async def _next_delta(stream: AsyncIterator[AnswerDelta], stopped: asyncio.Future) -> AnswerDelta | None:
    """The stream's next delta; None when it has ended or Stop was pressed."""
    step = asyncio.ensure_future(_anext_or_none(stream))
    try:
        await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not step.done():
            # CancelledError reaches the source where it waits: it aborts the request. Wait for
            # that before anyone closes the stream (closing a running generator fails).
            step.cancel()
            await asyncio.wait({step})
    return None if step.cancelled() else step.result()


async def _anext_or_none(stream: AsyncIterator[AnswerDelta]) -> AnswerDelta | None:
    return await anext(stream, None)


def _without_empty_answer(history: list[dict]) -> list[dict]:
    return history[:-1] if not history[-1]["content"] else history
