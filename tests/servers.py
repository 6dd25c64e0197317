"""`lite` servers as tests run them: a real process on a free port, and what its /metrics say."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiteProcess:
    """`lite ARGS --port PORT` in a process of its own; up once `ready_path` answers 200. Its output
    goes to a file, not a pipe nobody reads (a full pipe would stall the server)."""

    def __init__(self, args: list[str], ready_path: str = "/health", timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, "-m", "lite.cli", *args, "--port", str(self.port)],
                                        stdout=self._log, stderr=subprocess.STDOUT, text=True)
        try:
            self._wait_until_ready(args[0], ready_path, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, command: str, ready_path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"lite {command} exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"lite {command} did not come up:\n{self.log()}"
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def read_metric(url: str, name: str, labels: str = "") -> float:
    """One sample of a server's /metrics, e.g. read_metric(url, "lite_kv_blocks_free")."""
    text = httpx.get(f"{url}/metrics").text
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{labels} not in /metrics")


def wait_until_idle(url: str, timeout: float = 30.0) -> None:
    """Until no sequence runs or waits and every KV block is free (as /metrics reports)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (read_metric(url, "lite_num_requests_running") == 0 and read_metric(url, "lite_num_requests_waiting") == 0
                and read_metric(url, "lite_kv_blocks_free") == read_metric(url, "lite_kv_blocks_total")):
            return
        time.sleep(0.05)
    raise AssertionError("the engine did not become idle with every KV block free")
