"""The Python API: `lite.pipeline(model)(prompts)`."""
from __future__ import annotations

import dataclasses
from typing import Iterator

from lite.config import EngineConfig
from lite.engine.engine import LLMEngine
from lite.engine.outputs import RequestOutput
from lite.engine.sequence import SamplingParams
from lite.hub import resolve_model

Prompt = str | list[int] | list[dict]


def _is_single(prompts) -> bool:
    """A str, a list of token ids, or one chat (a list of message dicts) is a single prompt."""
    return isinstance(prompts, str) or (isinstance(prompts, list) and bool(prompts)
                                        and isinstance(prompts[0], (int, dict)))


class Pipeline:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer

    def __call__(self, prompts: Prompt | list[Prompt], params: SamplingParams | None = None,
                 **sampling: object) -> RequestOutput | list[RequestOutput]:
        """Generate for one prompt or a batch (continuously batched). Chats use the chat template.
        Sampling settings come as a SamplingParams or as keywords: `pipe(p, max_tokens=32, temperature=0)`."""
        params = self._params(params, sampling)
        if _is_single(prompts):
            return self.engine.generate([prompts], params)[0]
        return self.engine.generate(list(prompts), params)

    def stream(self, prompt: Prompt, params: SamplingParams | None = None,
               **sampling: object) -> Iterator[RequestOutput]:
        """Yield outputs of one prompt as tokens arrive; `output.delta_text` is the new text."""
        request_id = self.engine.add_request(prompt, self._params(params, sampling))
        try:
            while True:
                for output in self.engine.step():
                    if output.request_id == request_id:
                        yield output
                        if output.finished:
                            return
        finally:
            self.engine.abort(request_id)

    @staticmethod
    def _params(params: SamplingParams | None, sampling: dict) -> SamplingParams:
        if params is None:
            return SamplingParams(**sampling)
        return dataclasses.replace(params, **sampling) if sampling else params


def pipeline(model: str | None = None, *, revision: str | None = None, hub: str = "auto",
             **engine_options: object) -> Pipeline:
    """Load `model` (hub id, ModelScope id, local folder or GGUF file; None: the bundled SmolLM2)
    and return a callable that generates. Engine options: see `lite.config.EngineConfig`."""
    folder = resolve_model(model, revision=revision, hub=hub)
    return Pipeline(LLMEngine(EngineConfig(model=str(folder), **engine_options)))
