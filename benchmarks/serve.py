"""Load generator for OpenAI-compatible servers: N concurrent streaming clients, mixed lengths.

    # against any running server (lite serve, llama.cpp, vLLM...):
    python benchmarks/serve.py run --url http://127.0.0.1:8000 --model SmolLM2-135M-Instruct
    # lite serve, then llama-cpp-python's server, on the same GGUF and the same cores, one after the other:
    python benchmarks/serve.py compare --llama-cpp-python /path/to/venv/bin/python

Each client sends its next request as soon as the previous one ends (closed loop). Requests are
/v1/completions with a text prompt, greedy, streaming; EOS is banned with logit_bias so every
request generates exactly its max_tokens on every server. Reported: request throughput, output
tokens/s, time to first token (TTFT) and inter-token latency (ITL, the gap between streamed
chunks) at p50 and p99.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

WORDS = ("time person year way day thing man world life hand part child eye woman place work week case "
         "point government company number group problem fact river garden music window energy paper "
         "story doctor market island letter engine signal bridge summer forest planet coffee").split()


@dataclass
class Workload:
    prompts: list[str]
    max_tokens: list[int]


@dataclass
class RequestResult:
    ttft: float
    itls: list[float]
    latency: float
    text: str


@dataclass
class Report:
    label: str
    wall_s: float
    results: list[RequestResult] = field(default_factory=list)
    num_output_tokens: int = 0
    num_requested_tokens: int = 0

    def row(self) -> dict:
        ttfts = sorted(r.ttft for r in self.results)
        itls = sorted(x for r in self.results for x in r.itls)
        return {"requests/s": len(self.results) / self.wall_s,
                "output tokens/s": self.num_output_tokens / self.wall_s,
                "TTFT p50 (s)": percentile(ttfts, 50), "TTFT p99 (s)": percentile(ttfts, 99),
                "ITL p50 (ms)": 1000 * percentile(itls, 50), "ITL p99 (ms)": 1000 * percentile(itls, 99)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def build_workload(tokenizer, num_requests: int, prompt_range, output_range, seed: int) -> Workload:
    """Prompts of random words, each grown until it has its drawn number of tokens."""
    rng = random.Random(seed)
    prompts, max_tokens = [], []
    for _ in range(num_requests):
        target = rng.randint(*prompt_range)
        words: list[str] = []
        while len(tokenizer.encode(" ".join(words), add_special_tokens=False)) < target:
            words += rng.choices(WORDS, k=max(1, (target - len(words)) // 2))
        prompts.append(" ".join(words))
        max_tokens.append(rng.randint(*output_range))
    return Workload(prompts, max_tokens)


async def one_request(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int,
                      eos_token_ids: list[int]) -> RequestResult:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "logit_bias": {str(t): -100 for t in eos_token_ids},
            "repeat_penalty": 1.0}  # llama-cpp-python defaults to 1.1; others ignore the field
    start = time.perf_counter()
    first = last = None
    itls, pieces = [], []
    async with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            piece = choices[0].get("text") or ""
            if not piece:
                continue
            now = time.perf_counter()
            if first is None:
                first = now - start
            else:
                itls.append(now - last)
            last = now
            pieces.append(piece)
    return RequestResult(first if first is not None else float("nan"), itls, time.perf_counter() - start,
                         "".join(pieces))


async def run_load(url: str, model: str, workload: Workload, concurrency: int, eos_token_ids: list[int],
                   tokenizer, label: str) -> Report:
    queue: asyncio.Queue = asyncio.Queue()
    for item in zip(workload.prompts, workload.max_tokens):
        queue.put_nowait(item)
    report = Report(label, 0.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as http:
        async def client() -> None:
            while not queue.empty():
                prompt, max_tokens = queue.get_nowait()
                report.results.append(await one_request(http, model, prompt, max_tokens, eos_token_ids))
                report.num_requested_tokens += max_tokens

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        report.wall_s = time.perf_counter() - start
    report.num_output_tokens = sum(len(tokenizer.encode(r.text, add_special_tokens=False))
                                   for r in report.results)
    return report


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no server answered at {url} within {timeout:.0f}s")


def serve_and_measure(command: list[str], env: dict, url: str, model: str, args, workload: Workload,
                      tokenizer, eos_token_ids: list[int], label: str) -> Report:
    print(f"$ {' '.join(command)}", file=sys.stderr)
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(url, process)
        warm_up = Workload(workload.prompts[:2], [8, 8])
        asyncio.run(run_load(url, model, warm_up, 2, eos_token_ids, tokenizer, label))
        return asyncio.run(run_load(url, model, workload, args.concurrency, eos_token_ids, tokenizer, label))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def markdown(reports: list[Report], args, commands: dict[str, str]) -> str:
    columns = list(reports[0].row())
    lines = [f"| server | {' | '.join(columns)} |", f"| --- |{' ---: |' * len(columns)}"]
    for report in reports:
        cells = " | ".join(f"{value:,.3f}" if "TTFT" in name else f"{value:,.1f}"
                           for name, value in report.row().items())
        lines.append(f"| {report.label} | {cells} |")
    lines.append("")
    lines += [f"- {label}: `{command}`" for label, command in commands.items()]
    lines.append(f"- load: `python benchmarks/serve.py {' '.join(sys.argv[1:])}`; {args.num_requests} "
                 f"requests, {args.concurrency} concurrent streaming clients, prompts "
                 f"{args.prompt_tokens[0]}–{args.prompt_tokens[1]} tokens, outputs "
                 f"{args.output_tokens[0]}–{args.output_tokens[1]} (seed {args.seed}), greedy, EOS banned")
    for report in reports:
        lines.append(f"- {report.label}: {len(report.results)} requests in {report.wall_s:.1f}s, "
                     f"{report.num_output_tokens} output tokens counted of {report.num_requested_tokens} "
                     "requested")
    return "\n".join(lines)


def load_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    from lite.hub import resolve_model
    folder = resolve_model(str(gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    generation_config = json.loads((folder / "generation_config.json").read_text())
    eos = generation_config.get("eos_token_id", tokenizer.eos_token_id)
    return tokenizer, sorted({tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])})


def bundled_gguf() -> Path:
    from lite.hub import bundled_model_path
    return bundled_model_path()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="measure one running server")
    run.add_argument("--url", default="http://127.0.0.1:8000", help="the server's origin")
    run.add_argument("--model", default="SmolLM2-135M-Instruct", help="the model name to send")
    compare = sub.add_parser("compare", help="start lite serve, then llama-cpp-python's server, on one GGUF")
    compare.add_argument("--llama-cpp-python", default=sys.executable,
                         help="a Python with llama-cpp-python[server] installed (default: this one)")
    compare.add_argument("--port", type=int, default=8123, help="port both servers use in turn")
    compare.add_argument("--threads", type=int, default=os.cpu_count(),
                         help="compute threads of each server: OMP_NUM_THREADS for lite's PyTorch, "
                              "--n_threads for llama.cpp (default: all cores)")
    for sp in (run, compare):
        sp.add_argument("--gguf", type=Path, help="GGUF file (default: the bundled SmolLM2-135M-Instruct); "
                                                  "its tokenizer sizes the prompts")
        sp.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default: 16)")
        sp.add_argument("--num-requests", type=int, default=64, help="requests in all (default: 64)")
        sp.add_argument("--prompt-tokens", type=int, nargs=2, default=[16, 256], metavar=("MIN", "MAX"))
        sp.add_argument("--output-tokens", type=int, nargs=2, default=[16, 128], metavar=("MIN", "MAX"))
        sp.add_argument("--seed", type=int, default=0, help="seeds the workload (default: 0)")
    args = parser.parse_args()
    gguf = args.gguf or bundled_gguf()
    tokenizer, eos_token_ids = load_tokenizer(gguf)
    workload = build_workload(tokenizer, args.num_requests, args.prompt_tokens, args.output_tokens, args.seed)
    if args.mode == "run":
        report = asyncio.run(run_load(args.url, args.model, workload, args.concurrency, eos_token_ids,
                                      tokenizer, args.url))
        print(markdown([report], args, {}))
        return 0
    url, name = f"http://127.0.0.1:{args.port}", "bench-model"
    max_model_len = args.prompt_tokens[1] + args.output_tokens[1] + 64
    commands = {
        "lite": [sys.executable, "-m", "lite.cli", "serve", str(gguf), "--port", str(args.port),
                 "--served-model-name", name, "--max-num-seqs", str(args.concurrency),
                 "--max-model-len", str(max_model_len)],
        "llama.cpp (llama-cpp-python server)": [
            args.llama_cpp_python, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(args.port),
            "--model_alias", name, "--n_ctx", str(max(2048, max_model_len)), "--n_threads", str(args.threads),
            "--n_threads_batch", str(args.threads), "--interrupt_requests", "False"],
    }
    # PyTorch sizes its thread pool from OMP_NUM_THREADS when it starts.
    envs = {"lite": {"OMP_NUM_THREADS": str(args.threads)}}
    reports = [serve_and_measure(command, envs.get(label, {}), url, name, args, workload, tokenizer,
                                 eos_token_ids, label)
               for label, command in commands.items()]
    shown = {label: " ".join([*(f"{k}={v}" for k, v in envs.get(label, {}).items()), *command])
             for label, command in commands.items()}
    print(markdown(reports, args, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
