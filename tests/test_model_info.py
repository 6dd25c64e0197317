"""What lite tells about a model: vision or not, quantization, suggested generation settings."""
import json

from lite.config import ModelConfig
from lite.model_info import describe_engine, is_vision_language, read_generation_defaults, weight_quantization

TEXT_FIELDS = {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2}


def test_a_config_with_a_vision_tower_is_vision_language():
    qwen2_vl = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
                **TEXT_FIELDS, "vision_config": {"depth": 32, "embed_dim": 1280}}
    llava = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
             "text_config": {"model_type": "llama", **TEXT_FIELDS},
             "vision_config": {"model_type": "clip_vision_model"}}
    for config in (qwen2_vl, llava):
        assert is_vision_language(config)
        # The engine reads config.json through ModelConfig: the vision block survives that.
        assert is_vision_language(ModelConfig.from_dict(config).hf_config)


def test_a_text_only_config_is_not_vision_language():
    smollm2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **TEXT_FIELDS}
    assert not is_vision_language(smollm2)
    assert not is_vision_language(ModelConfig.from_dict(smollm2).hf_config)
    assert not is_vision_language({**smollm2, "vision_config": None})


def test_weight_quantization_names_method_bits_and_group():
    assert weight_quantization({}) == "none"
    assert weight_quantization({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
                               ) == "awq int4, group 128"
    assert weight_quantization({"quantization_config": {"quant_method": "GPTQ", "bits": 4}}) == "gptq int4"


def test_generation_defaults_keep_only_sampling_settings(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": True, "temperature": 0.6, "top_p": 0.95,
         "max_new_tokens": 256, "top_k": None}))
    assert read_generation_defaults(tmp_path) == {"do_sample": True, "temperature": 0.6, "top_p": 0.95,
                                                  "max_new_tokens": 256}
    assert read_generation_defaults(tmp_path / "missing") == {}


def test_describe_engine_reports_the_running_configuration(smollm2_engine):
    info = describe_engine(smollm2_engine, "smol")
    assert (info.name, info.backend, info.dtype, info.weight_quantization, info.kv_cache_dtype) == (
        "smol", "cpu", "float32", "none", "none")
    assert info.max_model_len == 1024 and not info.is_vision
