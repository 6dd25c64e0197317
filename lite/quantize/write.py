"""Convert's writing half: every source tensor to the output folder, linears as AutoAWQ int4.

Layer by layer: read one decoder layer in float32, run the calibration activations through it,
let AWQ rescale/clip/quantize it, write it, drop it. Only one layer's weights, the activations
entering it and the pending output shard are in memory at a time.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from tqdm.auto import tqdm

from lite.config import LITE_CONFIG_FILE, ModelConfig
from lite.quantize.awq import quantize_layer
from lite.quantize.awq_format import awq_quantization_config, pack_awq
from lite.quantize.calibration import calibration_tokens
from lite.quantize.checkpoint_io import ShardWriter, SourceCheckpoint
from lite.quantize.decoder_layer import CalibrationLayer, rotary_tables
from lite.quantize.int4 import quantize_int4
from lite.quantize.layer_table import layer_table

if TYPE_CHECKING:
    from lite.quantize.convert import ConvertOptions

LAYER_TENSOR = re.compile(r"model\.layers\.(\d+)\.(.+)")
SKIPPED_TENSORS = re.compile(r".*rotary_emb\.inv_freq$")  # recomputed from the config by every loader
NOT_COPIED = ("config.json", LITE_CONFIG_FILE)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def write_output(folder: Path, cfg: ModelConfig, source: SourceCheckpoint, staging: Path,
                 options: "ConvertOptions", dtype: torch.dtype, stages: dict[str, float],
                 stage: Callable[[int, str, str], None]) -> None:
    writer = ShardWriter(staging)
    started = time.perf_counter()
    if options.weight == "w4a16" and options.method == "awq":
        calib = options.calibration
        stage(3, "calibrate", f"{calib.num_samples} samples x {calib.seq_len} tokens from "
                              f"{calib.source or 'text the model generates from seed prompts'}")
        tokens = calibration_tokens(folder, calib)
    else:
        stage(3, "calibrate", "not needed" + (" (round-to-nearest)" if options.weight == "w4a16" else ""))
        tokens = None
    stages["calibrate"] = time.perf_counter() - started
    started = time.perf_counter()
    if options.weight == "w4a16":
        stage(4, "quantize", f"{cfg.num_hidden_layers} layers to int4 ({options.method}, group size "
                             f"{options.group_size}), unquantized tensors as {str(dtype).removeprefix('torch.')}")
        quantize_model(cfg, source, tokens, options, writer, dtype)
    else:
        stage(4, "copy", f"weights kept, as {str(dtype).removeprefix('torch.')}")
        for name in tqdm(source.names(), desc="Copying tensors", unit="tensor"):
            if not SKIPPED_TENSORS.match(name):
                writer.add(name, source.read([name], dtype)[name])
    writer.finish()
    write_metadata(folder, staging, options, dtype)
    stages["quantize"] = time.perf_counter() - started


@torch.inference_mode()
def quantize_model(cfg: ModelConfig, source: SourceCheckpoint, tokens: torch.Tensor | None,
                   options: "ConvertOptions", writer: ShardWriter, dtype: torch.dtype) -> None:
    table, settings = layer_table(cfg.architecture), options.awq_settings
    layer_names: dict[int, list[str]] = {}
    other_names = []
    for name in source.names():
        match = LAYER_TENSOR.fullmatch(name)
        if match:
            layer_names.setdefault(int(match[1]), []).append(name)
        elif not SKIPPED_TENSORS.match(name):
            other_names.append(name)
    hidden, rotary = None, rotary_tables(cfg, 1)
    if tokens is not None:  # AWQ: the activations entering layer 0
        embed_name = "model.embed_tokens.weight"
        hidden = source.read([embed_name], torch.float32)[embed_name][tokens]  # [samples, seq_len, hidden]
        rotary = rotary_tables(cfg, tokens.shape[1])
    for i in tqdm(range(cfg.num_hidden_layers), desc=f"Quantizing layers ({options.method})", unit="layer"):
        prefix = f"model.layers.{i}."
        weights = {name.removeprefix(prefix): tensor for name, tensor in
                   source.read([n for n in layer_names.get(i, []) if not SKIPPED_TENSORS.match(n)],
                               torch.float32).items()}
        missing = [name for name in table.linears if f"{name}.weight" not in weights]
        if missing:
            raise ValueError(f"layer {i} of the checkpoint lacks {', '.join(missing)}")
        layer = CalibrationLayer(weights, cfg, rotary)
        if hidden is not None:
            next_hidden, inputs = layer.forward(hidden)  # float outputs feed the next layer, as in AutoAWQ
            quantized = quantize_layer(layer, inputs, table, settings)
            hidden = next_hidden
            del inputs
        else:
            quantized = {name: quantize_int4(weights[f"{name}.weight"], settings.group_size)
                         for name in table.linears}
        for name, weight in quantized.items():
            for part, tensor in pack_awq(weight).items():
                writer.add(f"{prefix}{name}.{part}", tensor)
        for name, tensor in weights.items():
            if name.removesuffix(".weight") not in quantized:  # norms, biases (rescaled by AWQ)
                writer.add(prefix + name, tensor.to(dtype))
    for name in other_names:  # embeddings, final norm, lm_head: kept unquantized, as AutoAWQ does
        writer.add(name, source.read([name], dtype)[name])


def estimate_output_bytes(cfg: ModelConfig, source: SourceCheckpoint, options: "ConvertOptions",
                          dtype: torch.dtype) -> int:
    itemsize = torch.empty((), dtype=dtype).element_size()
    quantized = set()
    if options.weight == "w4a16":
        linears = layer_table(cfg.architecture).linears
        quantized = {f"model.layers.{i}.{name}.weight" for i in range(cfg.num_hidden_layers) for name in linears}
    total = 0
    for name, shape in source.shapes.items():
        numel = math.prod(shape)
        if name in quantized:  # int4 values + per group: float16 scale and int4 zero
            total += numel // 2 + numel // options.group_size * 5 // 2
        else:
            total += numel * itemsize
    return total


def write_metadata(folder: Path, staging: Path, options: "ConvertOptions", dtype: torch.dtype) -> None:
    import lite

    config = json.loads((folder / "config.json").read_text())
    dtype_key = "dtype" if "dtype" in config and "torch_dtype" not in config else "torch_dtype"
    config[dtype_key] = str(dtype).removeprefix("torch.")
    if options.weight == "w4a16":
        config["quantization_config"] = awq_quantization_config(options.group_size)
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in folder.iterdir():  # tokenizer, chat template, generation config, ...
        if path.is_file() and path.name not in NOT_COPIED and not path.name.startswith(".") \
                and not path.name.endswith(WEIGHT_SUFFIXES) and not path.name.endswith(".index.json"):
            shutil.copy2(path, staging / path.name)
    calib = options.calibration
    record = {"kv_cache_dtype": options.kv, "weight": options.weight, "converted_by": f"lite {lite.__version__}"}
    if options.weight == "w4a16":
        record.update(method=options.method, group_size=options.group_size,
                      clip=options.awq_settings.clip)
        if options.method == "awq":
            record["calibration"] = {"source": calib.source or "self-generated", "num_samples": calib.num_samples,
                                     "seq_len": calib.seq_len, "seed": calib.seed}
    (staging / LITE_CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
