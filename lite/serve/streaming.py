"""Server-sent events in OpenAI's framing, and a streaming response that always frees its slots."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from lite.serve.errors import sse_error

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


def sse(model: BaseModel) -> str:
    return f"data: {model.model_dump_json(exclude_none=True)}\n\n"


async def guarded(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Errors after the first byte cannot change the status any more: they become an error event."""
    try:
        async for event in events:
            yield event
    except Exception as exc:
        yield sse_error(exc)
        yield DONE
    finally:
        await events.aclose()


class EventStream(StreamingResponse):
    """Calls `on_close` however the response ends, including when the client leaves before the
    first event, when Starlette cancels the body iterator without ever starting it."""

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(guarded(events), media_type="text/event-stream", headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
