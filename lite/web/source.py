"""What the chat UI talks to: a source of streamed answers, in-process or over HTTP."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from lite.model_info import ModelInfo
from lite.web.settings import GenerationSettings


@dataclass(frozen=True)
class AnswerDelta:
    text: str  # new text since the previous delta
    num_tokens: int  # tokens generated so far (counted by the source; exact where it knows)


class ChatSource(Protocol):
    """`stream` yields an answer's deltas; closing or cancelling the iterator aborts the request,
    and the engine frees its KV blocks. Failures a person can act on raise ChatError."""

    async def info(self) -> ModelInfo: ...

    def stream(self, messages: list[dict], settings: GenerationSettings) -> AsyncIterator[AnswerDelta]: ...
