"""One Llama-family decoder layer as a function of Hugging Face-named tensors, for calibration.

Convert works on the on-disk tensors (Hugging Face order: rotate-half rotary, separate q/k/v), one
layer at a time, on whole calibration sequences in float32, so it needs no model object, no paged
KV cache and no backend: plain causal attention over each sequence is exactly what the engine
computes for a prompt.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lite.backends.reference import rms_norm
from lite.config import ModelConfig
from lite.engine.layers.rotary import inverse_frequencies

Weights = dict[str, torch.Tensor]

KNOWN_TENSORS = ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_norm.weight",
                 "self_attn.k_norm.weight") + tuple(
    f"{linear}.{kind}" for linear in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    for kind in ("weight", "bias"))


def rotary_tables(cfg: ModelConfig, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [seq_len, head_dim] for rotate-half rotary (the order weights have on disk)."""
    inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class CalibrationLayer:
    """`weights` maps names inside the layer ("self_attn.q_proj.weight", ...) to float32 tensors;
    AWQ rescales and clips them in place. Inputs are [samples, seq_len, features]."""

    def __init__(self, weights: Weights, cfg: ModelConfig, rotary: tuple[torch.Tensor, torch.Tensor]):
        unknown = sorted(set(weights) - set(KNOWN_TENSORS))
        if unknown:
            raise ValueError(f"decoder layer tensors {unknown[:3]} are not part of the Llama-family layer "
                             "AWQ calibrates; this checkpoint's architecture differs from its config")
        self.weights = weights
        self.cfg = cfg
        self.cos, self.sin = rotary

    def linear(self, x: torch.Tensor, name: str, weights: Weights | None = None) -> torch.Tensor:
        w = self.weights if weights is None else weights
        return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))

    def attention_core(self, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """Normed input -> the heads' output, i.e. o_proj's input: [S, L, heads * head_dim]."""
        w = self.weights if weights is None else weights
        cfg, (samples, length, _) = self.cfg, x.shape
        heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = self.linear(x, "self_attn.q_proj", w).view(samples, length, heads, head_dim)
        k = self.linear(x, "self_attn.k_proj", w).view(samples, length, kv_heads, head_dim)
        v = self.linear(x, "self_attn.v_proj", w).view(samples, length, kv_heads, head_dim)
        if "self_attn.q_norm.weight" in w:  # Qwen3 normalizes each head before rotary
            q = rms_norm(q, w["self_attn.q_norm.weight"], cfg.rms_norm_eps)
            k = rms_norm(k, w["self_attn.k_norm.weight"], cfg.rms_norm_eps)
        cos, sin = self.cos[:length, None], self.sin[:length, None]
        q, k = _rotate(q, cos, sin).transpose(1, 2), _rotate(k, cos, sin).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True, enable_gqa=True)
        return out.transpose(1, 2).reshape(samples, length, heads * head_dim)

    def attention(self, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        return self.linear(self.attention_core(x, weights), "self_attn.o_proj", weights)

    def mlp_core(self, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """Normed input -> down_proj's input."""
        return F.silu(self.linear(x, "mlp.gate_proj", weights)) * self.linear(x, "mlp.up_proj", weights)

    def mlp(self, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        return self.linear(self.mlp_core(x, weights), "mlp.down_proj", weights)

    def block(self, name: str, x: torch.Tensor, weights: Weights | None = None) -> torch.Tensor:
        """The output a scale search compares: 'attention', 'mlp' or one linear's."""
        if name == "attention":
            return self.attention(x, weights)
        if name == "mlp":
            return self.mlp(x, weights)
        return self.linear(x, name, weights)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The layer's output and the input of each of its linears (shared tensors for q/k/v, gate/up)."""
        eps = self.cfg.rms_norm_eps
        x = rms_norm(hidden, self.weights["input_layernorm.weight"], eps)
        heads_out = self.attention_core(x)
        hidden = hidden + self.linear(heads_out, "self_attn.o_proj")
        x2 = rms_norm(hidden, self.weights["post_attention_layernorm.weight"], eps)
        mlp_in = self.mlp_core(x2)
        hidden = hidden + self.linear(mlp_in, "mlp.down_proj")
        inputs = {"self_attn.q_proj": x, "self_attn.k_proj": x, "self_attn.v_proj": x,
                  "self_attn.o_proj": heads_out, "mlp.gate_proj": x2, "mlp.up_proj": x2,
                  "mlp.down_proj": mlp_in}
        return hidden, inputs
