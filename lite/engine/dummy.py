"""Models without checkpoints, for `load_format="dummy"`: a folder with a config.json of real
shapes and a tokenizer covering its vocabulary, and random weights filled in on the device, so
benchmarks and tests run any shape with no download."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lite.config import ModelConfig
from lite.engine.layers.linear import Linear
from lite.engine.layers.norm import RMSNorm
from lite.engine.layers.w4a16_linear import W4A16Linear, swap_in_w4a16_linears
from lite.quantize.int4 import Int4Weight

# Llama-3-8B's shape (meta-llama/Meta-Llama-3-8B config.json), the benchmark's reference model.
LLAMA3_8B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
    intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128001, torch_dtype="bfloat16")


def write_numbered_tokenizer(folder: str | Path, vocab_size: int) -> None:
    """A word-level tokenizer whose token i is the word "<i>": every id decodes, none needs a download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({f"<{i}>": i for i in range(vocab_size)}, unk_token="<0>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<0>", "model_max_length": 1 << 20}))


def write_dummy_model(folder: str | Path, hf_config: dict) -> Path:
    """config.json plus a numbered tokenizer: enough for LLMEngine with load_format="dummy"."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config, indent=1))
    write_numbered_tokenizer(folder, hf_config["vocab_size"])
    return folder


def fill_random_weights(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Weights drawn as a fresh model's are (N(0, 0.02), norms at 1), in place on their device;
    not zeros, which can run faster than real data. With an int4 quantization_config in the
    config, the decoder layers' linears become W4A16 with random integers, scales and zeros."""
    quantization = cfg.hf_config.get("quantization_config")
    device = next(model.parameters()).device
    if quantization:
        swap_in_w4a16_linears(model, {name for name, module in model.named_modules()
                                      if isinstance(module, Linear) and ".layers." in name})
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, W4A16Linear):
                for shard, rows in enumerate(module.shard_sizes):
                    module.load("weight", _random_int4(rows, module.in_features, quantization["group_size"],
                                                       device), shard)
            if not isinstance(module, RMSNorm):
                for param in module.parameters(recurse=False):
                    param.normal_(0.0, 0.02)
    return model.eval()


def _random_int4(rows: int, cols: int, group_size: int, device: torch.device) -> Int4Weight:
    groups = (rows, cols // group_size)
    return Int4Weight(torch.randint(0, 16, (rows, cols), dtype=torch.uint8, device=device),
                      (torch.rand(groups, device=device) * 0.004 + 0.001).half(),
                      torch.randint(0, 16, groups, dtype=torch.uint8, device=device), group_size)
