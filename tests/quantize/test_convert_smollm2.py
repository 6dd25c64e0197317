"""`lite convert` end to end on the bundled SmolLM2-135M: servable output, quality, on-disk format."""
import json

import pytest
import torch
import transformers
from safetensors import safe_open

import lite
from conftest import make_engine
from lite.backends.cpu.quantized_linear import CPUInt4Weight
from lite.engine.layers.w4a16_linear import W4A16Linear, W8A16Linear
from lite.quantize.convert import ConvertOptions, convert
from lite.quantize.perplexity import perplexity

from .conftest import GROUP_SIZE, HELDOUT_TEXT
from .formats import autoawq_dequantize

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def test_converted_folder_loads_in_the_pipeline_and_answers_coherently(smollm2_awq):
    pipe = lite.pipeline(str(smollm2_awq), backend="cpu", max_model_len=512, kv_cache_memory=32 << 20)
    engine = pipe.engine
    assert engine.kv_cache_dtype == "int8"  # recorded by --kv int8, picked up without a flag
    qkv = engine.model.model.layers[0].self_attn.qkv_proj
    assert isinstance(qkv, W4A16Linear) and isinstance(qkv.weight, CPUInt4Weight)
    assert isinstance(engine.model.lm_head, W8A16Linear)  # AWQ's float head, run as int8
    assert not isinstance(make_engine(smollm2_awq, quantize_lm_head=False).model.lm_head, W8A16Linear)
    answer = pipe([{"role": "user", "content": "What is the capital of France?"}], max_tokens=24, temperature=0)
    assert "Paris" in answer.text
    story = pipe("Once upon a time, there was a little", max_tokens=32, temperature=0).text
    words = story.split()
    assert len(words) >= 10 and len(set(words)) >= len(words) // 2  # sentences, not one token repeated


@pytest.fixture(scope="module")
def perplexities(smollm2_dir, smollm2_awq, smollm2_rtn):
    text = HELDOUT_TEXT.read_text()
    runs = {"fp32": (smollm2_dir, "none"), "rtn-int4": (smollm2_rtn, "none"), "awq-int4": (smollm2_awq, "none"),
            "awq-int4+kv-int8": (smollm2_awq, "int8"), "awq-int4+kv-int4": (smollm2_awq, "int4")}
    figures = {}
    for name, (folder, kv) in runs.items():
        engine = make_engine(folder, kv_cache_dtype=kv, max_model_len=513, max_num_seqs=1,
                             kv_cache_memory=32 << 20, enable_prefix_caching=False)
        figures[name] = perplexity(engine, text, window=512, show_progress=False)
    print("\nperplexity on tests/data/heldout.txt:", {k: round(v, 3) for k, v in figures.items()})
    return figures


def test_awq_is_strictly_better_than_round_to_nearest(perplexities):
    assert perplexities["awq-int4"] < perplexities["rtn-int4"]
    assert perplexities["fp32"] < perplexities["awq-int4"]


def test_int8_kv_cache_costs_at_most_one_percent(perplexities):
    assert perplexities["awq-int4+kv-int8"] <= perplexities["awq-int4"] * 1.01
    assert perplexities["awq-int4+kv-int4"] < perplexities["rtn-int4"] * 1.5  # lossier, still sane


def tensors_of(folder):
    out = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})
    return out


def test_folder_validates_against_the_autoawq_gemm_layout(smollm2_awq):
    config = json.loads((smollm2_awq / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": GROUP_SIZE,
                                             "zero_point": True, "version": "gemm", "modules_to_not_convert": None}
    assert config["torch_dtype"] == "float16"
    parsed = transformers.AwqConfig.from_dict(config["quantization_config"])  # what transformers reads
    assert (parsed.bits, parsed.group_size, parsed.zero_point) == (4, GROUP_SIZE, True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (smollm2_awq / name).is_file()
    tensors = tensors_of(smollm2_awq)
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, kv), "self_attn.v_proj": (hidden, kv),
              "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (hidden, inter),
              "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}
    for layer in range(config["num_hidden_layers"]):
        for linear, (inp, out) in shapes.items():
            prefix = f"model.layers.{layer}.{linear}"
            assert f"{prefix}.weight" not in tensors
            assert tensors[f"{prefix}.qweight"].dtype == torch.int32
            assert tensors[f"{prefix}.qweight"].shape == (inp, out // 8)
            assert tensors[f"{prefix}.qzeros"].dtype == torch.int32
            assert tensors[f"{prefix}.qzeros"].shape == (inp // GROUP_SIZE, out // 8)
            assert tensors[f"{prefix}.scales"].dtype == torch.float16
            assert tensors[f"{prefix}.scales"].shape == (inp // GROUP_SIZE, out)
    others = [name for name in tensors if name.rpartition(".")[2] not in ("qweight", "qzeros", "scales")]
    assert others and all(tensors[name].dtype == torch.float16 for name in others)
    assert "lm_head.weight" not in tensors  # tied to the embeddings, as in the source


def test_round_to_nearest_weights_dequantize_to_the_source_by_autoawq_rules(smollm2_rtn, smollm2_dir):
    """Unpacked by AutoAWQ's own rules (nibble order included), each weight lies within half an
    int4 step of the source's: the layout means what AutoAWQ means by it."""
    source, converted = tensors_of(smollm2_dir), tensors_of(smollm2_rtn)
    for layer in (0, 29):
        for linear in LINEARS:
            prefix = f"model.layers.{layer}.{linear}"
            restored = autoawq_dequantize(*(converted[f"{prefix}.{p}"] for p in ("qweight", "qzeros", "scales")))
            step = converted[f"{prefix}.scales"].float().t().repeat_interleave(GROUP_SIZE, dim=1)
            assert ((restored - source[f"{prefix}.weight"]).abs() <= step * 0.501).all()


def test_kv_only_conversion_keeps_the_weights_and_records_the_cache(smollm2_gguf, tmp_path):
    out = convert(ConvertOptions(source=str(smollm2_gguf), output=tmp_path / "kv4", weight="none", kv="int4",
                                 dtype="float16")).output
    assert json.loads((out / "lite_config.json").read_text())["kv_cache_dtype"] == "int4"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    engine = make_engine(out, max_model_len=256, kv_cache_memory=16 << 20)
    assert engine.kv_cache_dtype == "int4"
    assert engine.generate(["The capital of France is"], lite.SamplingParams(max_tokens=8, temperature=0))[0].text
