"""AWQ on one decoder layer: the calibration function, scale folding, and the searches."""
import pytest
import torch
import transformers

from lite.config import ModelConfig
from lite.quantize.awq import AWQSettings, clip_weight, fold_scales, quantize_layer, search_scales
from lite.quantize.decoder_layer import CalibrationLayer, rotary_tables
from lite.quantize.layer_table import LLAMA_LAYER, layer_table

TINY = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256, rms_norm_eps=1e-6)
CONFIGS = {
    "llama-gqa": lambda: transformers.LlamaConfig(num_key_value_heads=2, **TINY),
    "llama-mha": lambda: transformers.LlamaConfig(num_key_value_heads=4, **TINY),
    "qwen2-bias": lambda: transformers.Qwen2Config(num_key_value_heads=2, **TINY),
    "qwen3-qk-norm": lambda: transformers.Qwen3Config(num_key_value_heads=2, head_dim=32, **TINY),
}


def tiny_layer(name: str, seq_len: int = 24):
    torch.manual_seed(0)
    config = CONFIGS[name]()
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random init leaves norms at 1 and biases at 0: make them matter
        for param_name, param in hf.named_parameters():
            if "norm" in param_name or param_name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.3)
    cfg = ModelConfig.from_dict({**config.to_dict(), "architectures": [hf.__class__.__name__]})
    prefix = "model.layers.0."
    weights = {k.removeprefix(prefix): v.clone().float() for k, v in hf.state_dict().items() if k.startswith(prefix)}
    return hf, CalibrationLayer(weights, cfg, rotary_tables(cfg, seq_len)), cfg


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_calibration_layer_matches_transformers(name):
    hf, layer, _ = tiny_layer(name)
    ids = torch.randint(0, 256, (3, 24))
    with torch.no_grad():
        states = hf(ids, output_hidden_states=True).hidden_states
        out, inputs = layer.forward(states[0])
    torch.testing.assert_close(out, states[1], rtol=1e-4, atol=1e-4)
    assert inputs["self_attn.q_proj"] is inputs["self_attn.v_proj"]  # one tensor per shared input


@pytest.mark.parametrize("name", ["llama-mha", "qwen2-bias"])
def test_folding_scales_leaves_the_float_layer_unchanged(name):
    _, layer, cfg = tiny_layer(name)
    x = torch.randn(2, 24, cfg.hidden_size)
    with torch.no_grad():
        before, _ = layer.forward(x)
        for group in LLAMA_LAYER.scale_groups:
            if group.applies_to(cfg):
                size = layer.weights[f"{group.linears[0]}.weight"].shape[1]
                fold_scales(layer.weights, group, torch.rand(size) * 4 + 0.25)
        after, _ = layer.forward(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_v_to_o_scaling_applies_only_without_grouped_query_attention():
    v_to_o = LLAMA_LAYER.scale_groups[1]
    assert v_to_o.applies_to(tiny_layer("llama-mha")[2]) and not v_to_o.applies_to(tiny_layer("llama-gqa")[2])


def outlier_inputs(layer: CalibrationLayer, cfg: ModelConfig) -> torch.Tensor:
    """Hidden states with a few large channels, the activation outliers AWQ exists for."""
    torch.manual_seed(1)
    x = torch.randn(4, 24, cfg.hidden_size)
    x[..., [3, 40, 77]] *= 25
    return x


def layer_error(layer: CalibrationLayer, quantized: dict, x: torch.Tensor, expected: torch.Tensor) -> float:
    weights = dict(layer.weights)
    weights.update({f"{name}.weight": w.dequantize() for name, w in quantized.items()})
    trial = CalibrationLayer(weights, layer.cfg, (layer.cos, layer.sin))
    return (trial.forward(x)[0] - expected).pow(2).mean().item()


def test_awq_beats_round_to_nearest_on_activation_outliers():
    _, layer, cfg = tiny_layer("llama-gqa")
    x = outlier_inputs(layer, cfg)
    with torch.no_grad():
        expected, inputs = layer.forward(x)
        rtn = quantize_layer(CalibrationLayer(dict(layer.weights), cfg, (layer.cos, layer.sin)), inputs,
                             LLAMA_LAYER, AWQSettings(group_size=32, search_scales=False, clip=False))
        rtn_error = layer_error(layer, rtn, x, expected)
        awq_layer = CalibrationLayer({k: v.clone() for k, v in layer.weights.items()}, cfg, (layer.cos, layer.sin))
        awq = quantize_layer(awq_layer, inputs, LLAMA_LAYER, AWQSettings(group_size=32))
        awq_error = layer_error(awq_layer, awq, x, expected)
    assert awq_error < 0.7 * rtn_error


def test_scale_search_is_never_worse_than_no_scaling():
    _, layer, cfg = tiny_layer("llama-gqa")
    x = outlier_inputs(layer, cfg)
    group = LLAMA_LAYER.scale_groups[2]  # post_attention_layernorm -> gate/up
    with torch.no_grad():
        _, inputs = layer.forward(x)
        scales = search_scales(layer, group, inputs["mlp.gate_proj"], AWQSettings(group_size=32, scale_grid=4))
    assert scales.shape == (cfg.hidden_size,) and (scales > 0).all()


def test_clipping_only_ever_shrinks_the_weight_range():
    _, layer, cfg = tiny_layer("llama-gqa")
    with torch.no_grad():
        _, inputs = layer.forward(torch.randn(2, 24, cfg.hidden_size))
        original = layer.weights["mlp.down_proj.weight"].clone()
        clip_weight(layer.weights, "mlp.down_proj", inputs["mlp.down_proj"], AWQSettings(group_size=32))
    clipped = layer.weights["mlp.down_proj.weight"]
    assert (clipped.abs() <= original.abs() + 1e-7).all()


def test_unknown_architectures_have_no_layer_table():
    with pytest.raises(ValueError, match="AWQ does not know the layer structure of 'GPT2LMHeadModel'"):
        layer_table("GPT2LMHeadModel")


def test_unknown_layer_tensors_are_refused():
    _, layer, cfg = tiny_layer("llama-gqa")
    with pytest.raises(ValueError, match="post_feedforward_layernorm"):
        CalibrationLayer({**layer.weights, "post_feedforward_layernorm.weight": torch.ones(8)}, cfg,
                         (layer.cos, layer.sin))
