"""Decode speed and KV capacity of quantized models on the CPU backend, beside llama.cpp.

Batch-1 greedy decode tokens/s (after the first token) for the float model, its W4A16 conversion,
and W4A16 with an int8/int4 KV cache; how many sequences of `--context` tokens fit in a fixed KV
budget; and llama.cpp (llama-cpp-python, optional) decoding the bundled 4-bit GGUF with the same
number of threads, in the same run.

    .venv/bin/lite convert -o /tmp/smollm2-awq --group-size 64
    .venv/bin/python benchmarks/quantized_decode.py /tmp/smollm2-awq
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def lite_decode(folder: str, kv: str, new_tokens: int, repeats: int) -> float:
    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine
    from lite.engine.sequence import SamplingParams

    engine = LLMEngine(EngineConfig(model=folder, backend="cpu", kv_cache_dtype=kv, max_num_seqs=1,
                                    max_model_len=512, kv_cache_memory=32 << 20))
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    engine.generate([PROMPT], params)  # warm-up
    rates = []
    for _ in range(repeats):
        engine.add_request(PROMPT, params)
        stamps = []
        while engine.has_unfinished():
            engine.step()
            stamps.append(time.perf_counter())
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return statistics.median(rates)


def lite_capacity(folder: str, kv: str, budget: int, context: int) -> int:
    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine

    engine = LLMEngine(EngineConfig(model=folder, backend="cpu", kv_cache_dtype=kv, max_num_seqs=4096,
                                    max_model_len=context, kv_cache_memory=budget))
    return engine.num_kv_blocks * engine.block_size // context


def llama_cpp_decode(gguf: str, threads: int, new_tokens: int, repeats: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
    rates = []
    for _ in range(repeats + 1):  # the first is a warm-up
        stamps = []
        # EOS banned, as lite's ignore_eos: both decode exactly new_tokens tokens
        for _chunk in llm.create_completion(PROMPT, max_tokens=new_tokens, temperature=0.0, stream=True,
                                            logit_bias={llm.token_eos(): -1e9}):
            stamps.append(time.perf_counter())
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return statistics.median(rates[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("awq_folder", help="a `lite convert` output of the bundled SmolLM2")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kv-budget-mib", type=int, default=64)
    parser.add_argument("--context", type=int, default=1024)
    args = parser.parse_args()
    from lite.hub import bundled_model_path, resolve_model

    gguf = bundled_model_path()
    source = str(resolve_model(str(gguf)))
    threads = torch.get_num_threads()
    rows = [("float32 (GGUF dequantized)", source, "none"), ("W4A16", args.awq_folder, "none"),
            ("W4A16 + KV int8", args.awq_folder, "int8"), ("W4A16 + KV int4", args.awq_folder, "int4")]
    print(f"| model | decode tokens/s (batch 1) | sequences of {args.context} tokens in "
          f"{args.kv_budget_mib} MiB of KV |")
    print("| --- | ---: | ---: |")
    for name, folder, kv in rows:
        rate = lite_decode(folder, kv, args.new_tokens, args.repeats)
        capacity = lite_capacity(folder, kv, args.kv_budget_mib << 20, args.context)
        print(f"| lite, {name} | {rate:.1f} | {capacity} |", flush=True)
    rate = llama_cpp_decode(str(gguf), threads, args.new_tokens, args.repeats)
    print(f"| llama.cpp, {gguf.name} | {'not installed' if rate is None else f'{rate:.1f}'} | |")
    print(f"\n{threads} threads, {args.new_tokens} new tokens, median of {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
