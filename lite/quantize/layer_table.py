"""Which op feeds which linears, per architecture: the data AWQ needs to move scales around.

AWQ multiplies the input columns of a group of linears by per-channel scales s and divides the op
that produces their input by s, so the float model computes the same function while the salient
input channels get finer int4 steps. Names are Hugging Face parameter names inside one decoder layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from lite.config import ModelConfig


@dataclass(frozen=True)
class ScaleGroup:
    previous: str  # the op whose output rows are divided by s: a norm, or a linear's rows (+ bias)
    linears: tuple[str, ...]  # linears that read that output: their input columns are multiplied by s
    block: str  # what the search compares before/after: "attention", "mlp", or the single linear
    needs_matching_shapes: bool = False  # v -> o only when v's rows feed o's columns one to one (no GQA)

    def applies_to(self, cfg: ModelConfig) -> bool:
        return not self.needs_matching_shapes or cfg.num_key_value_heads == cfg.num_attention_heads


@dataclass(frozen=True)
class LayerTable:
    scale_groups: tuple[ScaleGroup, ...]
    linears: tuple[str, ...]  # every linear quantized to int4, in the order they are written
    skip_clip: tuple[str, ...]  # q/k: clipping them distorts attention scores more than it saves


LLAMA_LAYER = LayerTable(
    scale_groups=(
        ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "attention"),
        ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj", needs_matching_shapes=True),
        ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
        ScaleGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
    ),
    linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    skip_clip=("self_attn.q_proj", "self_attn.k_proj"),
)

# Qwen2 adds q/k/v biases, Qwen3 q/k norms after the projections: neither changes where scales go.
LAYER_TABLES = {
    "LlamaForCausalLM": LLAMA_LAYER,
    "MistralForCausalLM": LLAMA_LAYER,
    "Qwen2ForCausalLM": LLAMA_LAYER,
    "Qwen3ForCausalLM": LLAMA_LAYER,
}


def layer_table(architecture: str) -> LayerTable:
    try:
        return LAYER_TABLES[architecture]
    except KeyError:
        raise ValueError(f"AWQ does not know the layer structure of {architecture!r} (supported: "
                         f"{', '.join(sorted(LAYER_TABLES))}); convert with --weight none to keep "
                         "its weights unquantized") from None
