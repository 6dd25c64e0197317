"""Bad input gets a clear error that names the problem and the fix."""
import json
import shutil

import pytest

from conftest import make_engine
from lite.engine.sequence import SamplingParams


def test_prompt_longer_than_the_context_names_both_lengths(smollm2_engine):
    with pytest.raises(ValueError, match=r"the prompt has \d+ tokens but the context holds 1024"):
        smollm2_engine.add_request("word " * 2000, SamplingParams(max_tokens=4))
    assert not smollm2_engine.has_unfinished()


def test_empty_prompt_is_rejected(smollm2_engine):
    with pytest.raises(ValueError, match="empty"):
        smollm2_engine.add_request("", SamplingParams(max_tokens=4))


def test_out_of_vocabulary_token_ids_are_rejected(smollm2_engine):
    with pytest.raises(ValueError, match="token ids must lie in"):
        smollm2_engine.add_request([1, 10**9], SamplingParams(max_tokens=4))


def test_unknown_architecture_lists_the_supported_ones(smollm2_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(smollm2_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported model architecture 'FancyNewForCausalLM'.*LlamaForCausalLM"):
        make_engine(folder)


def test_checkpoint_missing_tensors_is_named(smollm2_dir, tmp_path):
    import safetensors.torch
    folder = tmp_path / "model"
    shutil.copytree(smollm2_dir, folder)
    shard = next(folder.glob("*.safetensors"))
    tensors = safetensors.torch.load_file(shard)
    del tensors["model.layers.3.mlp.down_proj.weight"]
    safetensors.torch.save_file(tensors, shard)
    with pytest.raises(ValueError, match="lacks 1 tensors.*layers.3.mlp.down_proj"):
        make_engine(folder)


def test_kv_budget_below_one_full_sequence_says_how_to_fix(smollm2_dir):
    with pytest.raises(ValueError, match="raise --kv-cache-memory or lower --max-model-len"):
        make_engine(smollm2_dir, kv_cache_memory=1 << 20)


def test_max_model_len_beyond_the_model_is_rejected(smollm2_dir):
    with pytest.raises(ValueError, match="exceeds what the model supports"):
        make_engine(smollm2_dir, max_model_len=10**6)
