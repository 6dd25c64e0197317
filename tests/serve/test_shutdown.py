"""`lite serve` as a real process: its flags explain themselves, its log names the backend,
SIGTERM drains, then it exits 0."""
import json
import signal
import threading
import time

import httpx

from servers import LiteProcess

MODEL = "smol"


def test_every_serve_flag_has_help():
    from lite.cli import build_parser
    subcommands = next(a for a in build_parser()._actions if a.dest == "command")
    serve = subcommands.choices["serve"]
    assert serve.description
    for action in serve._actions:
        assert action.help and len(action.help) > 10, f"{action.option_strings or action.dest} has no help"


class StreamReader(threading.Thread):
    """Reads one streaming completion to its end; `events` are the decoded data lines."""

    def __init__(self, url: str, max_tokens: int):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.events: list = []
        self.first_event = threading.Event()

    def run(self) -> None:
        body = {"model": MODEL, "prompt": "One, two, three,", "max_tokens": self.max_tokens,
                "ignore_eos": True, "temperature": 0, "stream": True}
        try:
            with httpx.stream("POST", f"{self.url}/v1/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
                        self.first_event.set()
        except httpx.HTTPError:
            pass  # the server cut the connection: what arrived is in events
        self.first_event.set()

    @property
    def completed(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"


def test_sigterm_finishes_requests_within_the_grace_period_then_exits_0(smollm2_dir):
    server = LiteProcess(["serve", str(smollm2_dir), "--served-model-name", MODEL, "--max-model-len", "512",
                          "--kv-cache-memory", "32MiB", "--shutdown-timeout", "10"])
    process, url = server.process, server.url
    try:
        short, long = StreamReader(url, max_tokens=48), StreamReader(url, max_tokens=4000)
        for reader in (short, long):
            reader.start()
            assert reader.first_event.wait(60)
        short_was_running = not short.completed
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        refused = False
        try:
            httpx.get(f"{url}/health", timeout=2)
        except httpx.HTTPError:
            refused = True  # no new connections once draining
        assert process.wait(timeout=60) == 0
        short.join(10)
        long.join(10)
        log = server.log()
    finally:
        server.stop()
    assert refused and short_was_running
    assert short.completed and short.events[-2]["choices"][0]["finish_reason"] == "length"
    assert not long.completed  # aborted when the grace period ran out
    assert "backend cpu selected" in log or "backend cpu (requested)" in log
    assert "server stopped" in log
