"""Engine SampleResults -> OpenAI logprobs: the chat shape and the legacy completions shape."""
from __future__ import annotations

from lite.engine.sampler import SampleResult
from lite.serve.protocol import ChatLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob


class LogprobFormatter:
    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._texts: dict[int, str] = {}  # token id -> its text; the vocabulary is fixed

    def token_text(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    def _top(self, token_id: int, logprob: float) -> TopLogprob:
        text = self.token_text(token_id)
        return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode()))

    def chat(self, samples: list[SampleResult]) -> ChatLogprobs:
        content = []
        for sample in samples:
            top = [self._top(t, lp) for t, lp in sample.top_logprobs or ()]
            sampled = self._top(sample.token_id, sample.logprob)
            content.append(TokenLogprob(**sampled.model_dump(), top_logprobs=top))
        return ChatLogprobs(content=content)

    def completion(self, samples: list[SampleResult], text_offset: int) -> CompletionLogprobs:
        """`text_offset`: characters of the choice's text before the first of these tokens."""
        result = CompletionLogprobs(top_logprobs=[])
        for sample in samples:
            text = self.token_text(sample.token_id)
            result.tokens.append(text)
            result.token_logprobs.append(sample.logprob)
            result.top_logprobs.append({self.token_text(t): lp for t, lp in sample.top_logprobs or ()})
            result.text_offset.append(text_offset)
            text_offset += len(text)
        return result
