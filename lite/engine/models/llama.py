"""The Llama family, written once: Llama 2/3, Qwen2/2.5 (qkv bias), Qwen3 (q/k norm), Mistral, SmolLM2.

Shaped like the Hugging Face code so checkpoints load by name; q/k/v and gate/up are merged into
one projection each, and attention goes through the backend via `Attention`.
"""
from __future__ import annotations

import torch
from torch import nn

from lite.backends.base import ForwardContext, Ops
from lite.config import ModelConfig
from lite.engine.layers.attention import Attention
from lite.engine.layers.linear import Linear
from lite.engine.layers.norm import RMSNorm
from lite.engine.layers.rotary import RotaryEmbedding


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, ops: Ops):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = \
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, [self.q_size, self.kv_size, self.kv_size],
                               cfg.attention_bias, ops)
        # Qwen2 puts a bias on q/k/v but none on the output projection.
        o_bias = cfg.attention_bias and cfg.model_type != "qwen2"
        self.o_proj = Linear(self.q_size, cfg.hidden_size, o_bias, ops)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, ops) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, ops) if cfg.qk_norm else None
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, layer_idx)

    def forward(self, rope: torch.Tensor, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        q, k, v = (t.view(qkv.shape[0], -1, self.head_dim)
                   for t in qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = self.attn(q, k, v, ctx, rope)
        return self.o_proj(out.reshape(-1, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, [cfg.intermediate_size] * 2, False, ops)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, False, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gate_up_proj.silu_and_mul(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, ops: Ops):
        super().__init__()
        self.self_attn = LlamaAttention(cfg, layer_idx, ops)
        self.mlp = LlamaMLP(cfg, ops)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)

    def forward(self, rope, x, residual, ctx):
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(rope, x, ctx)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaForCausalLM(nn.Module):
    # checkpoint projection name -> (merged module name, shard index)
    packed_modules = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
                      "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}
    # Checkpoint modules whose rows per head are reordered for interleaved rotary pairs.
    rotary_interleaved_modules = ("q_proj", "k_proj", "q_norm", "k_norm")

    def __init__(self, cfg: ModelConfig, ops: Ops, max_positions: int):
        super().__init__()
        self.config = cfg
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.embed_tokens.weight.requires_grad_(False)
        self.model.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, i, ops) for i in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops)
        self.model.rotary = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, False, ops)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, ctx: ForwardContext,
                input_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [tokens, hidden] of a flattened batch; `input_embeds` replaces the ids."""
        x = self.embed(input_ids) if input_embeds is None else input_embeds
        residual = None
        rope = self.model.rotary.lookup(positions)
        for layer in self.model.layers:
            x, residual = layer(rope, x, residual, ctx)
        x, _ = self.model.norm(x, residual)
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)
