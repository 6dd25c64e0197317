"""Perplexity of held-out text: float model, RTN int4, AWQ int4, AWQ int4 + KV int8 / int4.

Every figure goes through lite's engine on the CPU backend (W4A16 kernel, paged int8/int4 KV
cache), with lite.quantize.perplexity: windows of 512 tokens, fed 32 tokens at a time so that
most attention reads the cache.

    lite convert -o /tmp/smollm2-rtn --group-size 64 --method rtn
    lite convert -o /tmp/smollm2-awq --group-size 64
    .venv/bin/python benchmarks/quantized_quality.py /tmp/smollm2-rtn /tmp/smollm2-awq
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELDOUT = Path(__file__).parent.parent / "tests" / "data" / "heldout.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rtn_folder")
    parser.add_argument("awq_folder")
    parser.add_argument("--source", help="the float model (default: the bundled SmolLM2, dequantized)")
    parser.add_argument("--text", type=Path, default=HELDOUT, help="held-out text (default: tests/data/heldout.txt)")
    args = parser.parse_args()
    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine
    from lite.hub import resolve_model
    from lite.quantize.perplexity import perplexity

    source = str(resolve_model(args.source))
    text = args.text.read_text()
    runs = [("float32", source, "none"), ("RTN int4", args.rtn_folder, "none"), ("AWQ int4", args.awq_folder, "none"),
            ("AWQ int4 + KV int8", args.awq_folder, "int8"), ("AWQ int4 + KV int4", args.awq_folder, "int4")]
    print("| weights + KV cache | perplexity | vs float32 |")
    print("| --- | ---: | ---: |")
    baseline = None
    for name, folder, kv in runs:
        engine = LLMEngine(EngineConfig(model=folder, backend="cpu", kv_cache_dtype=kv, max_num_seqs=1,
                                        max_model_len=513, kv_cache_memory=32 << 20, enable_prefix_caching=False))
        value = perplexity(engine, text, window=512, show_progress=False)
        baseline = baseline or value
        print(f"| {name} | {value:.3f} | {(value / baseline - 1) * 100:+.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
