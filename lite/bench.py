"""`lite bench`: measure the engine beside Hugging Face transformers on the same weights.

The parent process only parses flags and reports. Each side runs in its own child process
(`python -m lite.bench --worker lite|hf`) so that its peak RSS is its own and neither side's
threads or allocator state disturb the other; children hand back raw timings as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from importlib import metadata
from pathlib import Path
from statistics import median

HF_BATCH_SIZES = (8, 32)
# Room per sequence for the last partly filled KV block, whatever the backend's block size.
KV_SLACK_TOKENS_PER_SEQ = 128
ROW_LABELS = {"decode": "decode, batch 1: tokens/s", "prefill": "prefill: prompt tokens/s",
              "mixed": "mixed requests: output tokens/s", "rss": "peak RSS: MiB (lower is better)"}


@dataclass(frozen=True)
class Workload:
    decode_prompt_tokens: int = 16
    decode_new_tokens: int = 128
    prefill_prompt_tokens: int = 512
    num_requests: int = 32
    min_prompt_tokens: int = 16
    max_prompt_tokens: int = 256
    min_output_tokens: int = 16
    max_output_tokens: int = 128
    repeats: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.decode_new_tokens < 2:
            raise ValueError("decode needs at least 2 new tokens: its rate is timed after the first")
        if min(self.decode_prompt_tokens, self.prefill_prompt_tokens, self.num_requests, self.repeats) < 1:
            raise ValueError("prompt lengths, the number of requests and repeats must be >= 1")
        if not (1 <= self.min_prompt_tokens <= self.max_prompt_tokens
                and 1 <= self.min_output_tokens <= self.max_output_tokens):
            raise ValueError("mixed prompt and output lengths need 1 <= min <= max")

    @property
    def max_seq_tokens(self) -> int:
        return max(self.decode_prompt_tokens + self.decode_new_tokens, self.prefill_prompt_tokens + 1,
                   self.max_prompt_tokens + self.max_output_tokens)


# A smoke run: every code path once, in seconds; its numbers mean nothing.
QUICK = dict(decode_prompt_tokens=8, decode_new_tokens=4, prefill_prompt_tokens=32, num_requests=4,
             min_prompt_tokens=4, max_prompt_tokens=16, min_output_tokens=2, max_output_tokens=6, repeats=1)


def random_prompt(vocab_size: int, num_tokens: int, seed: str) -> list[int]:
    # Random ids: timing does not depend on the text, and a fresh prompt per repeat keeps
    # lite's prefix cache from serving a repeat out of the previous one.
    rng = random.Random(seed)
    return [rng.randrange(vocab_size) for _ in range(num_tokens)]


def mixed_requests(work: Workload, vocab_size: int, repeat: int) -> list[tuple[list[int], int]]:
    """(prompt ids, max new tokens) per request; lengths are the same in every repeat, ids are not."""
    rng = random.Random(f"{work.seed}-mixed-lengths")
    lengths = [(rng.randint(work.min_prompt_tokens, work.max_prompt_tokens),
                rng.randint(work.min_output_tokens, work.max_output_tokens)) for _ in range(work.num_requests)]
    return [(random_prompt(vocab_size, n, f"{work.seed}-mixed-{repeat}-{i}"), new)
            for i, (n, new) in enumerate(lengths)]


class LiteSide:
    def __init__(self, engine_args: dict, work: Workload):
        from lite.cli import engine_from_args
        from lite.config import ModelConfig

        engine_args = dict(engine_args)
        cfg = ModelConfig.from_folder(engine_args["model"])
        engine_args["max_model_len"] = engine_args.get("max_model_len") or work.max_seq_tokens
        if not engine_args.get("kv_cache_memory"):
            # Just enough cache for the workload (fp32 bound), so peak RSS compares with
            # transformers' cache, which grows only as far as the batch needs.
            per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4
            engine_args["kv_cache_memory"] = per_token * work.num_requests * (
                work.max_seq_tokens + KV_SLACK_TOKENS_PER_SEQ)
        self.engine = engine_from_args(argparse.Namespace(**engine_args))
        self.vocab_size = cfg.vocab_size
        self.dtype = str(self.engine.dtype).removeprefix("torch.")
        self.device = str(self.engine.backend.device)

    def _params(self, max_tokens: int):
        from lite.engine.sequence import SamplingParams
        return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    def decode_tokens_per_s(self, prompt: list[int], new_tokens: int) -> float:
        request_id = self.engine.add_request(prompt, self._params(new_tokens))
        first, last, count = None, None, 0
        while self.engine.has_unfinished():
            outputs = self.engine.step()
            now = time.perf_counter()
            for output in outputs:
                if output.request_id == request_id:
                    first, last, count = first or now, now, len(output.token_ids)
        return (count - 1) / (last - first)

    def prefill_seconds(self, prompt: list[int]) -> float:
        start = time.perf_counter()
        self.engine.generate([prompt], self._params(1))
        return time.perf_counter() - start

    def mixed_seconds(self, requests: list[tuple[list[int], int]], batch_size: int | None) -> float:
        # Continuous batching: everything submitted at once, the scheduler decides the rest.
        start = time.perf_counter()
        outputs = self.engine.generate([p for p, _ in requests], [self._params(n) for _, n in requests])
        seconds = time.perf_counter() - start
        assert [len(o.token_ids) for o in outputs] == [n for _, n in requests]
        return seconds


class _TokenClock:
    # A transformers streamer that only notes when put() arrives: once for the prompt, then per token.
    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class HFSide:
    def __init__(self, engine_args: dict, dtype: str, device: str):
        import torch
        import transformers

        self.torch = torch
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            engine_args["model"], dtype=getattr(torch, dtype)).to(device).eval()
        self.dtype, self.device, self.vocab_size = dtype, device, self.model.config.vocab_size
        config = self.model.generation_config
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
        self.pad_id = next(t for t in (config.pad_token_id, eos, 0) if t is not None)

    def _generate(self, ids, mask, new_tokens: int, streamer=None) -> None:
        # min_new_tokens = max_new_tokens: the same number of tokens as lite's ignore_eos.
        with self.torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                      use_cache=True, pad_token_id=self.pad_id, streamer=streamer)
        assert out.shape[1] == ids.shape[1] + new_tokens

    def _batch(self, prompts: list[list[int]]):
        # Left padding, as decoder-only generation needs: every row's last token lines up.
        longest = max(len(p) for p in prompts)
        ids = self.torch.full((len(prompts), longest), self.pad_id, dtype=self.torch.long)
        mask = self.torch.zeros((len(prompts), longest), dtype=self.torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt):] = self.torch.tensor(prompt)
            mask[row, longest - len(prompt):] = 1
        return ids, mask

    def decode_tokens_per_s(self, prompt: list[int], new_tokens: int) -> float:
        clock = _TokenClock()
        self._generate(*self._batch([prompt]), new_tokens, streamer=clock)
        first_token_at = clock.times[1]  # times[0] is the prompt
        return (len(clock.times) - 2) / (clock.times[-1] - first_token_at)

    def prefill_seconds(self, prompt: list[int]) -> float:
        start = time.perf_counter()
        self._generate(*self._batch([prompt]), 1)
        return time.perf_counter() - start

    def mixed_seconds(self, requests: list[tuple[list[int], int]], batch_size: int | None) -> float:
        # Static batches in arrival order; each runs to its longest request, the rest is waste.
        start = time.perf_counter()
        for first in range(0, len(requests), batch_size):
            batch = requests[first:first + batch_size]
            self._generate(*self._batch([p for p, _ in batch]), max(n for _, n in batch))
        return time.perf_counter() - start


def run_worker(side_name: str, settings: dict) -> dict:
    """Everything one side measures, in this (child) process."""
    import resource

    import torch

    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    work = Workload(**settings["workload"])
    start = time.perf_counter()
    side = LiteSide(settings["engine_args"], work) if side_name == "lite" else \
        HFSide(settings["engine_args"], settings["dtype"], settings["device"])
    load_seconds = time.perf_counter() - start

    def note(what: str, value: float, unit: str) -> float:
        print(f"bench {side_name}: {what} {value:.1f} {unit}", file=sys.stderr, flush=True)
        return value

    warm = random_prompt(side.vocab_size, work.prefill_prompt_tokens, f"{work.seed}-warmup")
    side.decode_tokens_per_s(warm[:work.decode_prompt_tokens], min(8, work.decode_new_tokens))
    side.prefill_seconds(warm)
    decode, prefill, mixed = [], [], {}
    for repeat in range(work.repeats):
        prompt = random_prompt(side.vocab_size, work.decode_prompt_tokens, f"{work.seed}-decode-{repeat}")
        decode.append(note("decode", side.decode_tokens_per_s(prompt, work.decode_new_tokens), "tokens/s"))
        prompt = random_prompt(side.vocab_size, work.prefill_prompt_tokens, f"{work.seed}-prefill-{repeat}")
        prefill.append(note("prefill", len(prompt) / side.prefill_seconds(prompt), "tokens/s"))
    for batch_size in settings["hf_batch_sizes"] if side_name == "hf" else [None]:
        label = "continuous" if batch_size is None else f"batches of {batch_size}"
        for repeat in range(work.repeats):
            requests = mixed_requests(work, side.vocab_size, repeat)
            useful = sum(n for _, n in requests)  # only what each request asked for counts
            rate = useful / side.mixed_seconds(requests, batch_size)
            mixed.setdefault(label, []).append(note(f"mixed ({label})", rate, "output tokens/s"))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"side": side_name, "dtype": side.dtype, "device": side.device, "threads": torch.get_num_threads(),
            "load_seconds": load_seconds, "decode": decode, "prefill": prefill, "mixed": mixed,
            "peak_rss_bytes": peak_rss if sys.platform == "darwin" else peak_rss * 1024}


def run_side(side_name: str, settings: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        env = dict(os.environ)
        # The child must import this same lite, even from a source tree that is not installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "lite.bench", "--worker", side_name, "--settings", json.dumps(settings),
                   "--result", str(result_path)]
        code = subprocess.run(command, env=env).returncode
        if code != 0:
            raise RuntimeError(f"the {side_name} benchmark process failed with exit code {code}; its log is above")
        return json.loads(result_path.read_text())


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable, "os": platform.platform(),
            "python": platform.python_version(), "lite": versions.get("lite-deploy", "?"),
            "torch": versions.get("torch", "?"), "transformers": versions.get("transformers", "not installed")}


def build_table(work: Workload, lite: dict, hf: dict | None) -> str:
    best_hf = max(hf["mixed"], key=lambda k: median(hf["mixed"][k])) if hf else None
    rows = [
        (f"{ROW_LABELS['decode']} ({work.decode_prompt_tokens}-token prompt, {work.decode_new_tokens} new)",
         median(lite["decode"]), hf and median(hf["decode"])),
        (f"{ROW_LABELS['prefill']} ({work.prefill_prompt_tokens}-token prompt, time to first token)",
         median(lite["prefill"]), hf and median(hf["prefill"])),
        (f"{ROW_LABELS['mixed']} ({work.num_requests} requests; lite continuous"
         + (f", transformers {best_hf})" if hf else ")"),
         median(lite["mixed"]["continuous"]), hf and median(hf["mixed"][best_hf])),
        (ROW_LABELS["rss"], lite["peak_rss_bytes"] / 2**20, hf and hf["peak_rss_bytes"] / 2**20),
    ]
    lines = ["| benchmark | lite | transformers | lite / transformers |", "| --- | ---: | ---: | ---: |"]
    for label, ours, theirs in rows:
        theirs_cell, ratio = ("skipped", "—") if theirs is None else (f"{theirs:,.1f}", f"{ours / theirs:.2f}x")
        lines.append(f"| {label} | {ours:,.1f} | {theirs_cell} | {ratio} |")
    return "\n".join(lines)


def build_report(args, work: Workload, lite: dict, hf: dict | None, machine: dict) -> str:
    model = Path(args.model).name if args.model else "SmolLM2-135M-Instruct (bundled)"
    quick = " — quick smoke run, numbers mean nothing" if args.quick else ""
    hf_batches = "; ".join(f"{k}: {median(v):,.1f}" for k, v in hf["mixed"].items()) if hf else "skipped"
    argv0 = ["lite"] if Path(sys.argv[0]).name == "lite" else [Path(sys.executable).name, "-m", "lite.cli"]
    load = f"{lite['load_seconds']:.1f}s lite" + (f", {hf['load_seconds']:.1f}s transformers" if hf else "")
    return "\n".join([
        f"## {model} on {machine['cpu']}, {lite['threads']} threads{quick}", "",
        f"- command: `{shlex.join([*argv0, *sys.argv[1:]])}`",
        f"- date: {date.today().isoformat()}",
        f"- machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs "
        f"({machine['usable_cpus']} usable), {machine['os']}",
        f"- software: lite {machine['lite']}, torch {machine['torch']}, transformers "
        f"{machine['transformers']}, Python {machine['python']}",
        f"- settings: {lite['dtype']} on {lite['device']}, torch threads {lite['threads']}, greedy, median "
        f"of {work.repeats} repeat(s) after a warm-up; model load {load}",
        f"- mixed workload: {work.num_requests} requests, prompts {work.min_prompt_tokens}–"
        f"{work.max_prompt_tokens} tokens, outputs {work.min_output_tokens}–{work.max_output_tokens} "
        f"(seed {work.seed}, EOS ignored); transformers output tokens/s by static batch size: {hf_batches}",
        "", build_table(work, lite, hf), "",
        "Decode counts tokens after the first (prefill excluded). Prefill is prompt tokens / time to first "
        "token. Mixed counts only the tokens each request asked for; transformers pads each static batch on "
        "the left and runs it to its longest request. Peak RSS is each side's whole process (`ru_maxrss`), "
        "lite's preallocated KV cache (sized to the workload) included. Ratios > 1 favour lite, except RSS.",
    ]) + "\n"


def write_section(path: Path, key: str, body: str) -> None:
    """Insert or replace one marked section, so re-running on a machine updates its own entry."""
    begin, end = f"<!-- lite-bench:{key} -->", f"<!-- /lite-bench:{key} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nWritten by `lite bench --output` (see benchmarks/README.md): one section per "
        "model, machine and thread count, replaced when re-run there.\n")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end) + "\n?", re.S)
    text = pattern.sub(lambda _: block, text, count=1) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def section_key(model: str, cpu: str, threads: int, quick: bool) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{Path(model).name} {cpu} {threads}t".lower()).strip("-")
    return slug + ("-quick" if quick else "")


def cmd_bench(args) -> int:
    from lite.hub import resolve_model

    work = Workload(decode_new_tokens=args.decode_tokens, prefill_prompt_tokens=args.prefill_tokens,
                    num_requests=args.num_requests, repeats=args.repeats, seed=args.seed)
    if args.quick:
        work = replace(work, **QUICK)
    engine_args = {k: v for k, v in vars(args).items() if k != "func"}
    # Resolved once here, so both children load the very same local folder.
    engine_args["model"] = str(resolve_model(args.model, revision=args.revision, hub=args.hub))
    settings = {"workload": asdict(work), "threads": args.threads, "engine_args": engine_args,
                "hf_batch_sizes": [2] if args.quick else args.hf_batch_sizes}
    lite = run_side("lite", settings)
    # transformers runs in the dtype and on the device lite resolved, so both do the same arithmetic.
    hf = None if args.skip_hf else run_side("hf", {**settings, "dtype": lite["dtype"], "device": lite["device"]})
    machine = machine_info()
    report = build_report(args, work, lite, hf, machine)
    print(report)
    if args.output:
        key = section_key(args.model or "smollm2-135m-instruct", machine["cpu"], lite["threads"], args.quick)
        write_section(Path(args.output), key, report)
        print(f"wrote {args.output}")
    return 0


def add_bench_parser(sub) -> None:
    from lite.cli import add_model_args

    parser = sub.add_parser(
        "bench", help="measure lite beside Hugging Face transformers on the same weights",
        description="Decode, prefill and mixed-batch throughput and peak memory of lite and of "
                    "transformers on the same weights, each in its own process; prints a markdown table. "
                    "Unless given, --max-model-len and --kv-cache-memory are sized to the workload, so peak "
                    "RSS compares like with like; --seed also seeds the random prompts.")
    add_model_args(parser)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement after one warm-up; the median is reported (default: 3)")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads for both sides (default: torch's default, usually the "
                             "number of physical cores)")
    parser.add_argument("--decode-tokens", type=int, default=128,
                        help="new tokens of the batch-1 decode run, after a 16-token prompt (default: 128)")
    parser.add_argument("--prefill-tokens", type=int, default=512,
                        help="prompt length of the prefill run (default: 512)")
    parser.add_argument("--num-requests", type=int, default=32,
                        help="requests in the mixed run: prompts of 16-256 tokens, outputs of 16-128 "
                             "(default: 32)")
    parser.add_argument("--hf-batch-sizes", type=int, nargs="+", default=list(HF_BATCH_SIZES),
                        help="static batch sizes transformers tries on the mixed run; the fastest is "
                             f"compared (default: {' '.join(map(str, HF_BATCH_SIZES))})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (a few tokens, 1 repeat; overrides the size flags): checks "
                             "that everything runs, its numbers mean nothing")
    parser.add_argument("--skip-hf", action="store_true", help="measure lite only")
    parser.add_argument("--output", metavar="PATH",
                        help="also write the report into this markdown file (e.g. docs/benchmarks.md), "
                             "replacing the section of the same model, CPU and thread count")
    parser.set_defaults(func=cmd_bench)


def main() -> int:
    parser = argparse.ArgumentParser(description="one side of `lite bench`, run as a child process")
    parser.add_argument("--worker", choices=("lite", "hf"), required=True)
    parser.add_argument("--settings", required=True, help="JSON from the parent")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    Path(args.result).write_text(json.dumps(run_worker(args.worker, json.loads(args.settings))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
