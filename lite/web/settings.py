"""The demo's generation settings: defaults from the model's generation config, and what they become
for the engine (SamplingParams) and for an OpenAI-compatible request."""
from __future__ import annotations

from dataclasses import dataclass

# When the model's generation_config.json is silent: a little randomness, as chat UIs usually have.
FALLBACK_TEMPERATURE = 0.7
FALLBACK_TOP_P = 0.9
FALLBACK_MAX_TOKENS = 512


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = FALLBACK_TEMPERATURE  # 0 is greedy
    top_p: float = FALLBACK_TOP_P
    max_tokens: int = FALLBACK_MAX_TOKENS
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must lie in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top-p must lie in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max tokens must be at least 1, got {self.max_tokens}")

    @classmethod
    def from_generation_config(cls, defaults: dict, max_model_len: int | None) -> GenerationSettings:
        """`defaults`: generation_config.json's sampling keys (ModelInfo.generation_defaults)."""
        # Hugging Face samples only with do_sample set; without it the model's authors meant greedy.
        temperature = 0.0 if defaults.get("do_sample") is False else defaults.get("temperature",
                                                                                   FALLBACK_TEMPERATURE)
        max_tokens = defaults.get("max_new_tokens", FALLBACK_MAX_TOKENS)
        if max_tokens and max_model_len:
            max_tokens = min(max_tokens, max_model_len - 1)
        return cls(temperature=min(float(temperature), 2.0), top_p=float(defaults.get("top_p", FALLBACK_TOP_P)),
                   max_tokens=int(max_tokens))

    @classmethod
    def from_form(cls, temperature: float, top_p: float, max_tokens: float, stop_lines: str
                  ) -> GenerationSettings:
        """The settings panel's values: sliders give floats, stop strings come one per line."""
        stop = tuple(line for line in (stop_lines or "").splitlines() if line)
        return cls(temperature=float(temperature), top_p=float(top_p), max_tokens=int(max_tokens), stop=stop)

    def sampling_params(self):
        from lite.engine.sequence import SamplingParams

        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              stop=self.stop)

    def request_fields(self) -> dict:
        """The same settings as OpenAI chat-completion request fields."""
        fields = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.stop:
            fields["stop"] = list(self.stop)
        return fields
