"""AWQ and GPTQ checkpoints in the engine, checked against transformers on the same weights.

Each int4 folder is turned into a float folder with an independent AutoAWQ-style (or GPTQ-style)
dequantizer written here from the formats' definitions; transformers runs that float folder and
lite's W4A16 engine must produce the same greedy tokens and close log-probabilities.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from conftest import make_engine
from lite.engine.sequence import SamplingParams
from lite.quantize.awq_format import UnsupportedCheckpoint, unpack_gptq
from lite.quantize.calibration import CalibrationSettings
from lite.quantize.convert import ConvertOptions, convert
from lite.quantize.int4 import quantize_int4

from .formats import autoawq_dequantize, gptq_dequantize, pack_gptq

TINY = dict(vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True)
PROMPTS = [[5, 17, 300, 42, 9, 1000, 77], list(range(100, 140))]
NEW_TOKENS = 12


@pytest.mark.parametrize("zero_offset", [1, 0], ids=["gptq", "gptq_v2"])
def test_gptq_unpacks_to_the_same_integers(zero_offset):
    weight = quantize_int4(torch.randn(16, 128), 32)
    parts = pack_gptq(weight, zero_offset)
    unpacked = unpack_gptq(parts["qweight"], parts["qzeros"], parts["scales"], parts["g_idx"], zero_offset)
    assert torch.equal(unpacked.qweight, weight.qweight) and torch.equal(unpacked.zeros, weight.zeros)


def test_gptq_act_order_is_refused():
    weight = quantize_int4(torch.randn(16, 128), 32)
    parts = pack_gptq(weight, 1)
    with pytest.raises(UnsupportedCheckpoint, match="act-order"):
        unpack_gptq(parts["qweight"], parts["qzeros"], parts["scales"], parts["g_idx"].flip(0), 1)


def float_copy(folder: Path, dest: Path, dequantize) -> Path:
    """The int4 folder with every quantized linear replaced by its dequantized float weight."""
    shutil.copytree(folder, dest)
    for path in dest.glob("*.safetensors"):
        tensors = load_file(path)
        for name in [n for n in tensors if n.endswith(".qweight")]:
            module = name.removesuffix(".qweight")
            tensors[f"{module}.weight"] = dequantize(*(tensors.pop(f"{module}.{p}") for p in
                                                       ("qweight", "qzeros", "scales")))
            tensors.pop(f"{module}.g_idx", None)
        save_file({k: v.float() for k, v in tensors.items()}, path)
    config = json.loads((dest / "config.json").read_text())
    config.pop("quantization_config")
    config["torch_dtype"] = "float32"
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "lite_config.json").unlink(missing_ok=True)
    return dest


def tiny_model(folder: Path, smollm2_dir: Path, config) -> Path:
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(8.0)  # a sharper head makes greedy tokens a sharp test
    hf.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, folder / name)
    return folder


def assert_same_generation(int4_folder: Path, float_folder: Path):
    hf = transformers.AutoModelForCausalLM.from_pretrained(float_folder, dtype=torch.float32).eval()
    engine = make_engine(int4_folder, max_model_len=256, kv_cache_memory=16 << 20)
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=0)
    for prompt, output in zip(PROMPTS, engine.generate(PROMPTS, params)):
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
                          return_dict_in_generate=True, output_logits=True)
        assert output.token_ids == out.sequences[0, len(prompt):].tolist()
        hf_logprobs = torch.log_softmax(torch.cat(out.logits).float(), -1)
        lite_logprobs = torch.tensor([s.logprob for s in output.logprobs])
        expected = hf_logprobs[torch.arange(NEW_TOKENS), torch.tensor(output.token_ids)]
        # W4A16 runs 16-bit activations: close, not bit-equal
        torch.testing.assert_close(lite_logprobs, expected, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("kv_heads, method", [(4, "awq"), (2, "awq"), (2, "rtn")],
                         ids=["mha-awq", "gqa-awq", "gqa-rtn"])
def test_lite_written_awq_runs_like_transformers_on_its_dequantized_weights(
        kv_heads, method, smollm2_dir, tmp_path):
    source = tiny_model(tmp_path / "source", smollm2_dir,
                        transformers.LlamaConfig(num_key_value_heads=kv_heads, **TINY))
    calib = tmp_path / "calib.txt"
    calib.write_text((Path(__file__).parent / "test_awq.py").read_text())  # any text that is not held out
    out = convert(ConvertOptions(source=str(source), output=tmp_path / "awq", group_size=32, method=method,
                                 calibration=CalibrationSettings(source=str(calib), num_samples=4, seq_len=64)))
    assert_same_generation(out.output, float_copy(out.output, tmp_path / "float", autoawq_dequantize))


def test_gptq_checkpoints_load_and_match(smollm2_dir, tmp_path):
    source = tiny_model(tmp_path / "source", smollm2_dir, transformers.Qwen2Config(num_key_value_heads=2, **TINY))
    folder = tmp_path / "gptq"
    shutil.copytree(source, folder)
    tensors = {}
    for path in folder.glob("*.safetensors"):
        for name, tensor in load_file(path).items():
            if name.endswith("proj.weight"):
                module = name.removesuffix(".weight")
                parts = pack_gptq(quantize_int4(tensor, 32), zero_offset=1)
                tensors.update({f"{module}.{part}": value for part, value in parts.items()})
            else:
                tensors[name] = tensor
        path.unlink()
    save_file(tensors, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False,
                                     "sym": False, "checkpoint_format": "gptq"}
    (folder / "config.json").write_text(json.dumps(config))
    assert_same_generation(folder, float_copy(folder, tmp_path / "float", gptq_dequantize))
