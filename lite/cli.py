"""The `lite` command: env | generate | chat | bench | serve | convert | gradio."""
from __future__ import annotations

import argparse
import logging
import re
import sys

logger = logging.getLogger("lite")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2GiB', '512MB', '1.5G' or plain bytes -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 2GiB, 512MiB, 1073741824)")
    unit = (match.group(2) or "").upper()[:1]
    return int(float(match.group(1)) * (1 << (10 * " KMGT".index(unit or " "))))


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="Hugging Face hub id, ModelScope id, local Hugging Face folder or GGUF "
                             "file (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--revision", help="hub branch, tag or commit to download")
    parser.add_argument("--hub", choices=["auto", "hf", "modelscope"], default="auto",
                        help="where a model id is fetched from (default: auto = Hugging Face, or "
                             "ModelScope when LITE_USE_MODELSCOPE=1)")
    parser.add_argument("--backend", default="auto",
                        help="device backend: auto, cuda, rocm, ascend, intel-xpu, cpu (default: auto "
                             "picks the first usable one and logs why; see `lite env`)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="compute and weight dtype (default: the checkpoint's, float32 for fp16 "
                             "checkpoints on CPU)")
    parser.add_argument("--max-model-len", type=int,
                        help="longest context (prompt + output) in tokens (default: the model's)")
    parser.add_argument("--max-num-seqs", type=int, default=64,
                        help="most sequences decoded together in one step (default: 64)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048,
                        help="token budget of one step; longer prompts are prefilled in chunks "
                             "(default: 2048)")
    parser.add_argument("--kv-cache-memory", type=parse_size,
                        help="memory for the paged KV cache, e.g. 2GiB (default: a share of free "
                             "device memory, at most 4 GiB on CPU)")
    parser.add_argument("--block-size", type=int, help="tokens per KV block (default: the backend's)")
    parser.add_argument("--kv-cache-dtype", choices=["auto", "none", "int8", "int4"], default="auto",
                        help="int8/int4 store the KV cache quantized per token and head (default: auto = "
                             "what `lite convert --kv` recorded in the model folder, else none)")
    parser.add_argument("--no-prefix-caching", action="store_true",
                        help="do not reuse the KV cache of shared prompt prefixes")
    parser.add_argument("--chat-template", help="a Jinja chat template file to use instead of the model's")
    parser.add_argument("--load-format", choices=["auto", "dummy"], default="auto",
                        help="auto: the checkpoint's weights; dummy: random weights of the model's shapes, "
                             "for benchmarks when only config.json is at hand (a hub id then downloads "
                             "no weights; default: auto)")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="never replay captured graphs (CUDA graphs), for debugging or to save their memory")
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="launch each step before the previous step's tokens reach the host, so "
                             "scheduling and detokenizing overlap the GPU's work (default: on for CUDA, "
                             "off on CPU, where a forward pass blocks and there is nothing to hide)")
    parser.add_argument("--seed", type=int, default=0, help="seed for requests that set none (default: 0)")


def add_listen_args(group, port: int) -> None:
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 "
                            "for every interface)")
    group.add_argument("--port", type=int, default=port, help=f"TCP port (default: {port})")


def add_sampling_args(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    parser.add_argument("--max-tokens", type=int, default=max_tokens,
                        help=f"most new tokens per answer (default: {max_tokens})")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 is greedy (default); higher samples more freely")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: off)")
    parser.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p x the top probability")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def engine_from_args(args):
    from pathlib import Path

    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine
    from lite.hub import resolve_model

    folder = resolve_model(args.model, revision=args.revision, hub=args.hub,
                           require_weights=args.load_format != "dummy")
    template = Path(args.chat_template).read_text() if args.chat_template else None
    return LLMEngine(EngineConfig(
        model=str(folder), dtype=args.dtype, backend=args.backend, seed=args.seed,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
        kv_cache_memory=args.kv_cache_memory, enable_prefix_caching=not args.no_prefix_caching,
        memory_fraction=getattr(args, "kv_cache_fraction", 0.9),  # only `lite serve` has the flag
        chat_template=template, kv_cache_dtype=args.kv_cache_dtype, load_format=args.load_format,
        enforce_eager=args.enforce_eager, async_scheduling=args.async_scheduling))


def sampling_from_args(args):
    from lite.engine.sequence import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          stop=tuple(args.stop))


def cmd_env(args) -> int:
    import platform

    import torch

    from lite.backends import availability, names

    print(f"lite {__import__('lite').__version__}, Python {platform.python_version()}, "
          f"PyTorch {torch.__version__}")
    for name in names():
        avail = availability(name)
        mark = "usable" if avail.ok else "not usable"
        print(f"  {name:10s} {mark:11s} {avail.reason}")
        for device in avail.devices:
            print(f"  {'':10s} {'':11s} device: {device}")
    return 0


def cmd_generate(args) -> int:
    engine = engine_from_args(args)
    params = sampling_from_args(args)
    prompts = args.prompt or ["Write a haiku about the sea."]
    requests = [[{"role": "user", "content": p}] if args.chat else p for p in prompts]
    for prompt, output in zip(prompts, engine.generate(requests, params)):
        if len(prompts) > 1:
            print(f"### {prompt}")
        print(output.text)
    return 0


def cmd_chat(args) -> int:
    engine = engine_from_args(args)
    params = sampling_from_args(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    print("lite chat: type a message; /reset clears the history, /exit or Ctrl-D quits.")
    while True:
        try:
            user = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if user in ("/exit", "/quit"):
            return 0
        if user == "/reset":
            del history[int(bool(args.system)):]
            continue
        if not user:
            continue
        history.append({"role": "user", "content": user})
        request_id = engine.add_request(history, params)
        answer = []
        try:
            while engine.has_unfinished():
                for output in engine.step():
                    if output.request_id == request_id:
                        print(output.delta_text, end="", flush=True)
                        answer.append(output.delta_text)
        except KeyboardInterrupt:
            engine.abort(request_id)
        print()
        history.append({"role": "assistant", "content": "".join(answer)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lite", description="Deploy LLMs on CUDA, Ascend, Intel, ROCm or CPU.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    env = sub.add_parser("env", help="list backends, whether each is usable here and why not")
    env.set_defaults(func=cmd_env)

    gen = sub.add_parser("generate", help="generate text for one or more prompts")
    add_model_args(gen)
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable; batched together)")
    gen.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    add_sampling_args(gen, max_tokens=128)
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="chat with a model in the terminal, streaming")
    add_model_args(chat)
    chat.add_argument("--system", help="system prompt")
    add_sampling_args(chat, max_tokens=512)
    chat.set_defaults(func=cmd_chat)

    from lite.bench import add_bench_parser
    add_bench_parser(sub)
    from lite.serve.cli import add_serve_parser
    add_serve_parser(sub)
    from lite.quantize.cli import add_convert_parser
    add_convert_parser(sub)
    from lite.web.cli import add_gradio_parser
    add_gradio_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname).1s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"lite: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

