"""AsyncLLMEngine: one background thread steps the engine; each request reads its own async stream."""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import AsyncIterator

from lite.engine.engine import LLMEngine
from lite.engine.outputs import RequestOutput
from lite.engine.sequence import SamplingParams

logger = logging.getLogger("lite.engine")


class EngineDeadError(RuntimeError):
    pass


class AsyncLLMEngine:
    """Model steps block for milliseconds to seconds, so they run on a thread of their own and the
    event loop stays free for I/O. Only that thread touches the LLMEngine; requests and aborts
    reach it through a queue."""

    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopped = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lite-engine", daemon=True)
        self._thread.start()

    async def generate(self, prompt, params: SamplingParams | None = None, request_id: str | None = None,
                       prompt_embeds=None, logits_processor=None) -> AsyncIterator[RequestOutput]:
        """Stream outputs of one request. Closing or cancelling the iterator aborts the request."""
        if self.error is not None or self._stopped:
            raise EngineDeadError(f"the engine loop has stopped: {self.error!r}")
        # Raises ValueError on bad input, before anything is queued.
        seq = self.engine.build_sequence(prompt, params, request_id, prompt_embeds, logits_processor)
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[seq.request_id] = (asyncio.get_running_loop(), stream)
        self._commands.put(("add", seq))
        self._wake.set()
        finished = False
        try:
            while not finished:
                item = await stream.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(seq.request_id, None)
            if not finished:
                self.abort(seq.request_id)

    @property
    def is_running(self) -> bool:
        return self.error is None and not self._stopped and self._thread.is_alive()

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))
        self._wake.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout)

    def _deliver(self, request_id: str, item) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, stream = target
            loop.call_soon_threadsafe(stream.put_nowait, item)

    def _drain_commands(self) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                try:
                    self.engine.add_sequence(arg)
                except ValueError as exc:
                    self._deliver(arg.request_id, exc)
            else:
                self.engine.abort(arg)

    def _run(self) -> None:
        while not self._stopped:
            self._drain_commands()
            if not self.engine.has_unfinished():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # fail the requests in flight, not the server
                logger.exception("engine step failed; aborting the requests in flight")
                for request_id in list(self.engine.requests):
                    self.engine.abort(request_id)
                    self._deliver(request_id, RuntimeError(f"generation failed: {exc}"))
                continue
            for output in outputs:
                self._deliver(output.request_id, output)
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)
            self._deliver(request_id, EngineDeadError("the engine is shutting down"))
