"""Answers from an AsyncLLMEngine in this process (`lite gradio MODEL`, `lite serve --web`)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from lite.engine.async_engine import AsyncLLMEngine, EngineDeadError
from lite.model_info import ModelInfo
from lite.web.errors import ChatError, context_too_long
from lite.web.history import has_images
from lite.web.settings import GenerationSettings
from lite.web.source import AnswerDelta


class EngineChatSource:
    def __init__(self, engine: AsyncLLMEngine, info: ModelInfo):
        self.engine, self._info = engine, info
        self._llm = engine.engine

    async def info(self) -> ModelInfo:
        return self._info

    async def stream(self, messages: list[dict], settings: GenerationSettings
                     ) -> AsyncIterator[AnswerDelta]:
        if has_images(messages):
            raise ChatError("lite's engine does not read images yet: send text only.")
        try:
            # Templating a long conversation takes a while: off the event loop the UI shares.
            prompt_ids = await asyncio.to_thread(self._llm.tokenizer.apply_chat_template, messages)
        except ValueError as exc:  # no chat template
            raise ChatError(str(exc)) from exc
        if len(prompt_ids) >= self._llm.max_model_len:
            raise context_too_long(f"{len(prompt_ids)} tokens; the model holds {self._llm.max_model_len}")
        try:
            # Leaving this loop early (Stop, a closed page) closes the engine stream, which aborts
            # the sequence and frees its KV blocks.
            async for output in self.engine.generate(prompt_ids, settings.sampling_params()):
                yield AnswerDelta(output.delta_text, len(output.token_ids))
        except EngineDeadError as exc:
            raise ChatError(f"The engine has stopped ({exc}); restart lite.") from exc
        except ValueError as exc:
            raise ChatError(str(exc)) from exc
