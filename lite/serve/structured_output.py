"""Grammar-constrained decoding with llguidance: JSON objects, JSON schemas and forced tool calls.

llguidance compiles a grammar lazily against the tokenizer and computes each step's allowed-token
mask in tens of microseconds on the CPU, whatever device runs the model; a mask is a bitmask over
the vocabulary that the sampler applies to one logits row. Once the grammar is complete only EOS
stays allowed, so a constrained answer ends exactly where the JSON does.
"""
from __future__ import annotations

import functools
import json
import logging
import threading

import llguidance
import llguidance.hf
import numpy as np
import torch

from lite.serve.errors import APIError

logger = logging.getLogger("lite.serve")

# Compact JSON, as OpenAI returns it: flexible whitespace lets a small model pad forever.
JSON_OPTIONS = {"whitespace_flexible": False}
# How a forced tool call is written: Hermes/Qwen style, which the tool-call parser reads back.
TOOL_CALL_PREFIX, TOOL_CALL_SUFFIX = "<tool_call>\n", "\n</tool_call>"


class GrammarProcessor:
    """The engine's per-sequence logits processor: advances a matcher over the tokens sampled since
    the last step and masks every token the grammar does not allow next."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.num_consumed = 0

    def __call__(self, output_token_ids: list[int], logits: torch.Tensor) -> None:
        was_error = self.matcher.is_error()
        for token_id in output_token_ids[self.num_consumed:]:
            self.matcher.consume_token(token_id)
        self.num_consumed = len(output_token_ids)
        if self.matcher.is_error() and not was_error:
            # From an error state only EOS is allowed (as after a complete grammar): the answer ends.
            logger.warning("grammar matcher error: %s", self.matcher.get_error()[:200])
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[:self.vocab_size].astype(bool)
        logits[:self.vocab_size].masked_fill_(torch.from_numpy(~allowed).to(logits.device), float("-inf"))
        logits[self.vocab_size:] = float("-inf")


class GrammarCompiler:
    """Turns response_format / tool_choice into per-sequence processors; one per server."""

    def __init__(self, hf_tokenizer, vocab_size: int, eos_token_ids: tuple[int, ...]):
        self._hf_tokenizer = hf_tokenizer
        self.vocab_size = vocab_size
        self._eos_token_ids = list(eos_token_ids)
        self._llg_tokenizer = None
        self._lock = threading.Lock()

    def _tokenizer(self) -> llguidance.LLTokenizer:
        # Building the token trie takes about a second: only servers that see a grammar pay it.
        with self._lock:
            if self._llg_tokenizer is None:
                self._llg_tokenizer = llguidance.hf.from_tokenizer(
                    self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=self._eos_token_ids)
            return self._llg_tokenizer

    def processors(self, grammar: str, count: int, param: str) -> list[GrammarProcessor]:
        """`count` independent processors for one grammar (n choices each need their own state);
        `param` names the request field the grammar came from, for the error message."""
        tokenizer = self._tokenizer()
        problem = _validate(grammar, tokenizer)
        if problem:
            raise APIError(400, f"the JSON schema in {param} is not usable: {problem}", param=param)
        return [GrammarProcessor(llguidance.LLMatcher(tokenizer, grammar), self.vocab_size)
                for _ in range(count)]


@functools.lru_cache(maxsize=256)
def _validate(grammar: str, tokenizer) -> str:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    return messages[0] if is_error else ""


def response_format_grammar(response_format) -> str | None:
    """The grammar for a chat response_format, or None for free text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        schema = {"type": "object"}
    elif response_format.json_schema is None:
        raise APIError(400, "response_format of type json_schema needs a json_schema object",
                       param="response_format.json_schema")
    else:
        schema = response_format.json_schema.json_schema or {"type": "object"}
    return _json_grammar(schema, "response_format.json_schema")


def tool_call_grammar(tools, tool_choice) -> str | None:
    """For tool_choice "required" or a named function: one Hermes-style call whose name is one of
    the allowed functions and whose arguments match that function's parameter schema."""
    if not tools or tool_choice in (None, "none", "auto"):
        return None
    functions = [tool.function for tool in tools]
    if tool_choice != "required":
        functions = [f for f in functions if f.name == tool_choice.function.name]
        if not functions:
            raise APIError(400, f"tool_choice names {tool_choice.function.name!r}, which is not among "
                                "the tools", param="tool_choice")
    # Each function's parameter schema becomes a definition at the root, where its own local
    # references ($defs of nested models, "#" for recursion) still resolve once re-rooted there.
    definitions = {f.name: _rerooted(f.parameters or {"type": "object"}, f"#/$defs/{f.name}") for f in functions}
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
              "properties": {"name": {"const": f.name}, "arguments": {"$ref": f"#/$defs/{f.name}"}}}
             for f in functions]
    schema = {**(calls[0] if len(calls) == 1 else {"anyOf": calls}), "$defs": definitions}
    lark = (f"start: {json.dumps(TOOL_CALL_PREFIX)} call {json.dumps(TOOL_CALL_SUFFIX)}\n"
            f"call: %json {json.dumps({'x-guidance': JSON_OPTIONS, **schema})}\n")
    return llguidance.LLMatcher.grammar_from_lark(lark)


def _rerooted(node, root: str):
    """A copy of a schema whose local "$ref"s ("#...") point into it where it now lives at root."""
    if isinstance(node, dict):
        return {key: root + value[1:] if key == "$ref" and isinstance(value, str) and value.startswith("#")
                else _rerooted(value, root) for key, value in node.items()}
    if isinstance(node, list):
        return [_rerooted(item, root) for item in node]
    return node


def _json_grammar(schema: dict, param: str) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise APIError(400, f"invalid JSON schema: {exc}", param=param) from exc
