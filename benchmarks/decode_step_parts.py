"""What each part of a captured batch-1 decode step costs, measured in the step itself (CUDA).

    python benchmarks/decode_step_parts.py [--w4a16] [--context 256] [--tiles]

A part is left out (its op replaced by a no-op of the right shape), the step re-captured as the
engine captures it, and its graph replay + logits timed beside the full step's: the outputs are
wrong, the timings real. In a chain of small kernels under programmatic dependent launch a
kernel's cost is not its own duration but what the chain loses by it, which only this shows.
`--tiles` (with --w4a16) instead times each candidate tile of the int4 GEMV on each projection in
the step, the others at the shipped tiles. Rounds alternate with the full step: a re-captured graph
can move by ~0.05 ms from one round to the next, so compare within a round.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import types
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.profile_decode import decode_layout, event_ms  # noqa: E402
from lite.backends.cuda import attention as cuda_attention  # noqa: E402
from lite.backends.cuda.kernels import int4_gemv_gluon, linear  # noqa: E402
from lite.config import EngineConfig  # noqa: E402
from lite.engine.dummy import LLAMA3_8B, write_dummy_model  # noqa: E402
from lite.engine.engine import LLMEngine  # noqa: E402
from lite.quantize.awq_format import awq_quantization_config  # noqa: E402

PROJECTIONS = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def _tile(block_n: int, tile_words: int, splits: int, num_warps: int, vec: int, ahead: int = 1) -> dict:
    return {"block_n": block_n, "tile_words": tile_words, "splits": splits, "num_warps": num_warps, "vec": vec,
            "ahead": ahead}


# Gated gate_up takes one split; the rest were the strongest in the chain sweeps (NOTES.md).
TILE_CANDIDATES = {
    "qkv": [_tile(16, 128, 1, 2, 4), _tile(16, 128, 1, 4, 4), _tile(16, 64, 1, 4, 2, 2), _tile(16, 64, 2, 4, 2)],
    "o": [_tile(16, 128, 1, 2, 4), _tile(16, 128, 1, 4, 4), _tile(16, 64, 1, 4, 2, 2), _tile(16, 64, 2, 4, 2)],
    "gate_up": [_tile(16, 128, 1, 2, 4), _tile(16, 128, 1, 4, 4), _tile(32, 128, 1, 4, 4), _tile(16, 64, 1, 4, 2, 2)],
    "down": [_tile(32, 64, 4, 4, 2), _tile(32, 64, 2, 4, 2), _tile(32, 64, 8, 4, 2), _tile(16, 64, 4, 4, 2)],
}


def _with_ops(model: torch.nn.Module, **changes) -> ExitStack:
    """Every module's ops replaced by a copy with `changes` until the stack closes."""
    stack = ExitStack()
    for module in model.modules():
        if hasattr(module, "ops"):
            stack.enter_context(mock.patch.object(module, "ops", dataclasses.replace(module.ops, **changes)))
    return stack


def _no_op_parts(model: torch.nn.Module) -> dict:
    """Name -> a context that leaves that part out of the step."""
    def first_half(x, *args):
        return x[..., : x.shape[-1] // 2]

    def empty_projection(x, weight, bias=None):
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    return {
        "KV store (with rotary)": lambda: mock.patch.object(cuda_attention, "store_kv", lambda *a, **k: None),
        "decode attention + merge": lambda: mock.patch.object(cuda_attention, "decode_attention", lambda *a: None),
        "norms": lambda: _with_ops(model, rms_norm=lambda x, w, eps: x, add_rms_norm=lambda x, r, w, eps: (x, r)),
        # The W4A16 gate_up then runs as the plain GEMV.
        "SiLU-and-mul": lambda: _with_ops(model, silu_and_mul=first_half, linear_w4a16_silu_and_mul=None),
        "int4 GEMVs": lambda: _with_ops(model, linear_w4a16=empty_projection,
                                        linear_w4a16_silu_and_mul=lambda x, w, b=None: first_half(
                                            empty_projection(x, w))),
    }


def _tiles_context(tiles: dict[str, dict]):
    by_shape = {PROJECTIONS[name]: tile for name, tile in tiles.items()}
    kernels = types.SimpleNamespace(gemv=int4_gemv_gluon.gemv, gemv_silu_and_mul=int4_gemv_gluon.gemv_silu_and_mul,
                                    gemv_tiles=lambda n, k: dict(by_shape[(n, k)]))
    return mock.patch.object(linear, "int4_gemv", kernels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--w4a16", action="store_true", help="the model with int4 (W4A16) decoder linears")
    parser.add_argument("--context", type=int, default=256, help="tokens in the cache at the timed step")
    parser.add_argument("--tiles", action="store_true", help="sweep the int4 GEMV's tiles instead (needs --w4a16)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = dict(LLAMA3_8B, **({"quantization_config": awq_quantization_config(128)} if args.w4a16 else {}))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dummy_model(Path(tmp) / "llama3-8b-shape", config)
        engine = LLMEngine(EngineConfig(model=str(folder), backend="cuda", dtype="bfloat16", load_format="dummy",
                                        max_model_len=4096, max_num_seqs=1))
    runner, layout = engine.runner, decode_layout(engine, 1, args.context)
    layers = engine.model_config.num_hidden_layers

    def step_ms(context=None) -> float:
        with context or ExitStack():
            runner.capture_graphs(1, 4096)
            return event_ms(lambda: runner.model.compute_logits(
                runner.graph_runner.replay([1], [args.context - 1], layout)), 50)

    print(f"{torch.cuda.get_device_name()} | {'W4A16' if args.w4a16 else 'bf16'} | context {args.context} | "
          f"graph replay + logits, ms a step (µs a layer)")
    step_ms()  # the first capture after start runs slower than the rest
    if args.tiles:
        shipped = {name: int4_gemv_gluon.gemv_tiles(*shape) for name, shape in PROJECTIONS.items()}
        variants = [(f"{name} {tile}", lambda name=name, tile=tile: _tiles_context({**shipped, name: tile}))
                    for name, tiles in TILE_CANDIDATES.items() for tile in tiles]
    else:
        variants = [(f"without {name}", part) for name, part in _no_op_parts(runner.model).items()]
    for round_index in range(args.rounds):
        full = step_ms()
        print(f"round {round_index}: full step {full:.4f}")
        for label, context in variants:
            ms = step_ms(context())
            print(f"  {label:70s} {ms:.4f} ({(ms - full) * 1e3 / layers:+.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
