"""Text <-> token ids: a Hugging Face fast tokenizer behind a small interface, plus streaming decode."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

# Prompt tokens kept as left context for the first decoded output token: some decoders render a
# token differently at the start of a string (SentencePiece drops the leading space of "▁the").
PROMPT_CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"  # what a decoder yields for an incomplete UTF-8 byte sequence


class Tokenizer:
    def __init__(self, model_dir: str | os.PathLike, chat_template: str | None = None):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.hf_tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if chat_template is not None:
            self.hf_tokenizer.chat_template = _read_chat_template(chat_template)
        self.eos_token_ids = _eos_token_ids(self.hf_tokenizer.eos_token_id, self.model_dir)
        self.vocab_size = len(self.hf_tokenizer)  # base vocabulary plus added tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf_tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf_tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens,
                                        clean_up_tokenization_spaces=False)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tools: list[dict] | None = None) -> list[int]:
        if not self.hf_tokenizer.chat_template:
            raise ValueError(
                f"the model in {self.model_dir} has no chat template: pass one with --chat-template "
                "(a Jinja template file), or use the completions API with a plain prompt")
        prompt = self.hf_tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False)
        # The template writes any BOS itself; letting the tokenizer add another would double it.
        return self.encode(prompt, add_special_tokens=False)


def _read_chat_template(template_or_path: str) -> str:
    # Every Jinja template has a "{"; anything without one is a file path.
    if "{" in template_or_path:
        return template_or_path
    return Path(template_or_path).expanduser().read_text()


def _eos_token_ids(tokenizer_eos_id: int | None, model_dir: Path) -> tuple[int, ...]:
    # Chat models often end turns with a token (e.g. <|eot_id|>) that only generation_config lists.
    ids = [] if tokenizer_eos_id is None else [tokenizer_eos_id]
    generation_config = model_dir / "generation_config.json"
    if generation_config.is_file():
        eos = json.loads(generation_config.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else ([] if eos is None else [eos])
    return tuple(dict.fromkeys(ids))


class IncrementalDetokenizer:
    """Turns one sequence's output ids into text as they arrive, like vLLM's detokenize_incrementally.

    Only a short window of ids is decoded per token (those since the last emitted text, plus the
    ids of that text as context), so each token costs O(1), not O(sequence length).
    """

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int] = (),
                 skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # window: [context ids whose text was already emitted | ids not yet emitted]
        self._window_ids = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._read_offset = len(self._window_ids)

    def feed(self, token_id: int) -> str:
        """Adds one token; returns the text it completes ("" while a character or word is unfinished)."""
        self._window_ids.append(token_id)
        context_text = self._decode(self._window_ids[:self._read_offset])
        window_text = self._decode(self._window_ids)
        # A trailing U+FFFD is a multi-byte character whose remaining bytes are in later tokens.
        if len(window_text) <= len(context_text) or window_text.endswith(REPLACEMENT_CHAR):
            return ""
        self._window_ids = self._window_ids[self._read_offset:]
        self._read_offset = len(self._window_ids)
        return window_text[len(context_text):]

    def _decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)
