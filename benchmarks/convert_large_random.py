"""Peak memory of `lite convert` on a model much larger than one layer: a random ~1.5B Llama.

Writes a Llama-shaped model with random float16 weights, one safetensors shard per decoder layer
(never the whole model in memory), then converts it with AWQ in a child process and reports the
child's peak RSS beside the model's float16 size on disk. Weights are random, so the quality of
the result means nothing; the figure is memory (and time) only.

    .venv/bin/python benchmarks/convert_large_random.py --workdir /tmp/lite-1p5b
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

# Llama-shaped, ~1.54B parameters: 22 layers of 60.8M, untied 49152 x 2048 embeddings and head.
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
          "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 22, "num_attention_heads": 32,
          "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
          "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float16",
          "bos_token_id": 1, "eos_token_id": 2}


def layer_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, i, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"]
    return {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
            "self_attn.q_proj.weight": (h, h), "self_attn.k_proj.weight": (kv, h),
            "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, h),
            "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h), "mlp.down_proj.weight": (h, i)}


def random_tensor(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if len(shape) == 1:  # norms near 1
        return (1 + 0.1 * torch.randn(shape, generator=gen)).half()
    return (torch.randn(shape, generator=gen) * shape[-1] ** -0.5).half()


def write_random_model(folder: Path, tokenizer_folder: Path) -> int:
    """One shard per layer (plus one for embeddings/head): peak memory is one shard."""
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    shards = [{f"model.layers.{i}.{name}": shape for name, shape in layer_shapes(CONFIG).items()}
              for i in range(CONFIG["num_hidden_layers"])]
    shards.append({"model.embed_tokens.weight": (CONFIG["vocab_size"], CONFIG["hidden_size"]),
                   "model.norm.weight": (CONFIG["hidden_size"],),
                   "lm_head.weight": (CONFIG["vocab_size"], CONFIG["hidden_size"])})
    for index, shapes in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {key: random_tensor(shape, gen) for key, shape in shapes.items()}
        save_file(tensors, folder / name, metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_folder / file, folder / file)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="scratch folder (about 4 GB)")
    parser.add_argument("--calib-samples", type=int, default=2)
    parser.add_argument("--calib-seqlen", type=int, default=64)
    args = parser.parse_args()
    from lite.hub import resolve_model

    source, out = args.workdir / "random-1.5b", args.workdir / "random-1.5b-awq"
    shutil.rmtree(args.workdir, ignore_errors=True)
    start = time.perf_counter()
    fp16_bytes = write_random_model(source, resolve_model(None))
    params = fp16_bytes // 2
    print(f"wrote {params / 1e9:.2f}B parameters, {fp16_bytes / 2**30:.2f} GiB float16, in "
          f"{time.perf_counter() - start:.0f}s")
    calib = args.workdir / "calib.txt"
    calib.write_text((Path(__file__).parent.parent / "README.md").read_text())
    command = [sys.executable, "-m", "lite.cli", "convert", str(source), "-o", str(out), "--group-size", "128",
               "--calib-data", str(calib), "--calib-samples", str(args.calib_samples),
               "--calib-seqlen", str(args.calib_seqlen)]
    print("$", " ".join(command))
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"convert: {seconds:.0f}s, peak RSS {peak / 2**30:.2f} GiB = {peak / fp16_bytes:.2f} x the "
          f"float16 model ({fp16_bytes / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
