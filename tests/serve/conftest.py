"""A real uvicorn server on 127.0.0.1, in a thread of the test process, around the bundled SmolLM2."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from conftest import make_engine
from servers import read_metric, wait_until_idle
from lite.engine.async_engine import AsyncLLMEngine
from lite.serve.app import build_app
from lite.serve.config import ServerConfig

MODEL = "SmolLM2-135M-Instruct"


class RunningServer:
    """Serves `engine` on a free port until stopped; `url` is its origin."""

    def __init__(self, engine, config: ServerConfig):
        self.llm = engine
        self.app = build_app(AsyncLLMEngine(engine), config)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        daemon=True)

    def __enter__(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()

    def metric(self, name: str, labels: str = "") -> float:
        return read_metric(self.url, name, labels)

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        wait_until_idle(self.url, timeout)


@pytest.fixture(scope="session")
def serve_llm(smollm2_dir):
    # Room for 32 concurrent chats of ~60 tokens each without preemption.
    return make_engine(smollm2_dir, max_model_len=512, max_num_seqs=32, kv_cache_memory=160 << 20)


@pytest.fixture(scope="session")
def server(serve_llm):
    with RunningServer(serve_llm, ServerConfig(served_model_names=(MODEL,))) as running:
        yield running


API_KEY = "test-key"
WEB_ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="session")
def strict_server(smollm2_dir):
    """Two decode slots and one queued sequence, an API key, a 64 KiB body limit, one CORS origin."""
    llm = make_engine(smollm2_dir, max_model_len=256, max_num_seqs=2, kv_cache_memory=32 << 20)
    config = ServerConfig(served_model_names=(MODEL,), api_keys=(API_KEY,), max_queued_seqs=1,
                          max_request_bytes=64 << 10, retry_after_s=2, cors_origins=(WEB_ORIGIN,))
    with RunningServer(llm, config) as running:
        yield running
