"""`lite convert SRC -o OUT --weight w4a16 --kv int8`: flags, progress and the final summary."""
from __future__ import annotations

import logging
from pathlib import Path

from lite.config import KV_CACHE_DTYPES
from lite.quantize.calibration import CalibrationSettings
from lite.quantize.convert import GROUP_SIZES, METHODS, WEIGHT_FORMATS, ConvertOptions, ConvertSummary, convert

logger = logging.getLogger("lite.quantize")

EVAL_WINDOW_TOKENS = 512
EVAL_KV_CACHE_BYTES = 256 << 20


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="quantize a model (AWQ W4A16, int8/int4 KV cache) into a servable folder",
                       description="Fetch SRC, quantize its linears to int4 with AWQ and write a folder in "
                                   "the AutoAWQ GEMM layout that `lite serve`, `lite chat` and "
                                   "`lite.pipeline` load (and transformers/vLLM can read).")
    p.add_argument("model", nargs="?", default=None,
                   help="Hugging Face hub id, ModelScope id, local folder or GGUF file (default: the "
                        "bundled SmolLM2-135M-Instruct)")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="folder to create; written beside it under a hidden name and renamed when complete")
    p.add_argument("--weight", choices=WEIGHT_FORMATS, default="w4a16",
                   help="w4a16: int4 weights (AWQ, asymmetric, per group) with 16-bit activations; "
                        "none: keep the weights (default: w4a16)")
    p.add_argument("--kv", choices=KV_CACHE_DTYPES, default="none",
                   help="KV cache precision recorded for the engine: int8/int4 quantize each token and "
                        "head on store, no calibration needed (default: none)")
    p.add_argument("--group-size", type=int, choices=GROUP_SIZES, default=128,
                   help="input columns sharing one int4 scale and zero (default: 128); it must divide "
                        "the hidden and intermediate sizes")
    p.add_argument("--method", choices=METHODS, default="awq",
                   help="awq: activation-aware scale and clip search (default); rtn: plain "
                        "round-to-nearest, the baseline AWQ is measured against")
    p.add_argument("--no-clip", action="store_true", help="skip AWQ's clipping search (faster, usually a bit worse)")
    p.add_argument("--calib-data",
                   help="calibration text: a .txt or .jsonl ('text' field) file, or a dataset name "
                        "(needs the datasets package and network); default: text the model generates "
                        "itself from built-in seed prompts, offline")
    p.add_argument("--calib-samples", type=int, default=16, help="calibration sequences (default: 16)")
    p.add_argument("--calib-seqlen", type=int, default=256, help="tokens per calibration sequence (default: 256)")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the self-generated calibration text (default: 0)")
    p.add_argument("--dtype", choices=("auto", "float16", "bfloat16", "float32"), default="auto",
                   help="dtype of the unquantized tensors on disk (default: float16 with w4a16, as "
                        "AutoAWQ writes; the source's with --weight none)")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--eval", metavar="TEXT_FILE",
                   help="after converting, report the perplexity of this text under the source and "
                        "the output (use text that was not used for calibration)")
    p.add_argument("--revision", help="hub branch, tag or commit to download")
    p.add_argument("--hub", choices=["auto", "hf", "modelscope"], default="auto",
                   help="where a model id is fetched from (default: auto)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    options = ConvertOptions(
        source=args.model, output=args.output, weight=args.weight, kv=args.kv, group_size=args.group_size,
        method=args.method, clip=not args.no_clip, dtype=args.dtype, force=args.force,
        revision=args.revision, hub=args.hub,
        calibration=CalibrationSettings(source=args.calib_data, num_samples=args.calib_samples,
                                        seq_len=args.calib_seqlen, seed=args.calib_seed))
    summary = convert(options)
    quality = evaluate(summary, options.kv, Path(args.eval)) if args.eval else None
    print(format_summary(summary, options, quality))
    return 0


def evaluate(summary: ConvertSummary, kv: str, text_file: Path) -> tuple[float, float]:
    """(source perplexity, output perplexity) of a held-out text, through the engine."""
    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine
    from lite.quantize.perplexity import perplexity

    text = text_file.read_text()
    results = []
    for folder, kv_cache_dtype in ((summary.source_folder, "none"), (summary.output, kv)):
        engine = LLMEngine(EngineConfig(model=str(folder), kv_cache_dtype=kv_cache_dtype, max_num_seqs=1,
                                        max_model_len=EVAL_WINDOW_TOKENS + 1, kv_cache_memory=EVAL_KV_CACHE_BYTES,
                                        enable_prefix_caching=False))
        results.append(perplexity(engine, text, window=EVAL_WINDOW_TOKENS))
        del engine
    return results[0], results[1]


def format_summary(summary: ConvertSummary, options: ConvertOptions, quality: tuple[float, float] | None) -> str:
    stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in summary.stage_seconds.items())
    what = ("weights kept" if options.weight == "none" else
            f"W4A16 {options.method.upper()}, group size {options.group_size}")
    lines = [f"lite convert: {summary.output} written in {summary.seconds:.1f}s ({stages})",
             f"  format:   {what}; KV cache {options.kv}",
             f"  size:     {_mib(summary.source_bytes)} of source weights -> {_mib(summary.output_bytes)} "
             f"output folder ({summary.source_bytes / max(summary.output_bytes, 1):.1f}x smaller)",
             f"  peak RSS: {_mib(summary.peak_rss_bytes)}"]
    if quality:
        before, after = quality
        lines.append(f"  perplexity (held-out text, KV {options.kv}): source {before:.3f} -> output "
                     f"{after:.3f} ({(after / before - 1) * 100:+.1f}%)")
    return "\n".join(lines)


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"
