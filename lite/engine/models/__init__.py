"""Model registry: Hugging Face `architectures` name -> lite model class."""
from __future__ import annotations

from torch import nn

from lite.engine.models.llama import LlamaForCausalLM

MODELS: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}


def model_class(architecture: str) -> type[nn.Module]:
    try:
        return MODELS[architecture]
    except KeyError:
        raise ValueError(f"unsupported model architecture {architecture!r}; lite supports: "
                         f"{', '.join(sorted(MODELS))}") from None
