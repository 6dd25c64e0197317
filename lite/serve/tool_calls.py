"""Tool calls in generated text -> OpenAI tool calls, whole or as streaming deltas.

Two formats, tried in this order:
- Hermes/Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number of them;
  text around them is content.
- Llama 3 JSON: the answer itself is `{"name": ..., "parameters": {...}}` (maybe after
  `<|python_tag|>`), several separated by `;`.

Arguments stream as the raw JSON text the model wrote, so the deltas of one call concatenate to
exactly its arguments. The non-streaming parse runs the same parser over the whole text, so both
paths always agree.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from lite.engine.stop import partial_stop_length

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
ARGUMENT_KEYS = ("arguments", "parameters")
OTHER_CALL_KEYS = ("type", "id")
WHITESPACE = " \t\r\n"


@dataclass
class ContentDelta:
    text: str


@dataclass
class ToolCallDelta:
    index: int
    arguments: str
    id: str | None = None  # id and name come with a call's first delta only
    name: str | None = None


@dataclass
class CallScan:
    """How far a call object `{"name": ..., "arguments": ...}` has been written (indexes into it)."""
    name: str | None = None
    args_start: int | None = None
    args_end: int | None = None  # set once the arguments value is complete
    end: int | None = None  # set once the object is closed
    is_invalid: bool = False  # not a call object after all


def _skip_whitespace(text: str, i: int) -> int:
    while i < len(text) and text[i] in WHITESPACE:
        i += 1
    return i


def _string_end(text: str, i: int) -> int | None:
    """Index after the JSON string that opens at text[i], or None while it is unfinished."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            return j + 1
        else:
            j += 1
    return None


def _value_end(text: str, i: int) -> int | None:
    """Index after the JSON value that starts at text[i], or None while it is unfinished."""
    if text[i] == '"':
        return _string_end(text, i)
    if text[i] in "{[":
        depth, j = 0, i
        while j < len(text):
            if text[j] == '"':
                end = _string_end(text, j)
                if end is None:
                    return None
                j = end
                continue
            depth += text[j] in "{["
            depth -= text[j] in "}]"
            j += 1
            if depth == 0:
                return j
        return None
    j = i
    while j < len(text) and text[j] not in ",}] \t\r\n":
        j += 1
    return j if j < len(text) else None  # a number may still grow


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def scan_call(body: str) -> CallScan:
    scan = CallScan()
    i = _skip_whitespace(body, 0)
    if i < len(body) and body[i] != "{":
        scan.is_invalid = True
        return scan
    i += 1
    while i < len(body):
        i = _skip_whitespace(body, i)
        if i >= len(body):
            break
        if body[i] == "}":
            scan.end = i + 1
            break
        if body[i] == ",":
            i += 1
            continue
        if body[i] != '"':
            scan.is_invalid = True
            break
        key_end = _string_end(body, i)
        colon = len(body) if key_end is None else _skip_whitespace(body, key_end)
        if colon >= len(body):
            break
        key = _json_or_none(body[i:key_end])
        if body[colon] != ":" or not isinstance(key, str):
            scan.is_invalid = True
            break
        value_start = _skip_whitespace(body, colon + 1)
        if value_start >= len(body):
            break
        value_end = _value_end(body, value_start)
        if key in ARGUMENT_KEYS:
            scan.args_start, scan.args_end = value_start, value_end
        elif key == "name" and value_end is not None:
            scan.name = _json_or_none(body[value_start:value_end])
            if not isinstance(scan.name, str) or not scan.name:
                scan.name, scan.is_invalid = None, True
                break
        elif key not in ("name", *OTHER_CALL_KEYS):
            scan.is_invalid = True
            break
        if value_end is None:
            break
        i = value_end
    return scan


class ToolCallParser:
    """Feed text deltas as they are generated; get content and tool-call deltas back."""

    def __init__(self):
        self.text = ""
        self.num_calls = 0
        self._pos = 0  # text before this index has become events (or was markup)
        self._state = "start"  # start | content | call | after_call
        self._is_llama = False
        self._call_start = 0  # where the current call's markup began: its fallback as content
        self._body_start: int | None = None
        self._announced = False
        self._num_args_sent = 0

    def feed(self, delta: str) -> list:
        self.text += delta
        return self._advance(final=False)

    def finish(self) -> list:
        return self._advance(final=True)

    def _advance(self, final: bool) -> list:
        events: list = []
        while True:
            progressed = getattr(self, f"_on_{self._state}")(events, final)
            if not progressed:
                return events

    def _on_start(self, events, final) -> bool:
        i = _skip_whitespace(self.text, 0)
        rest = self.text[i:]
        if not rest or (PYTHON_TAG.startswith(rest) and not final):
            if final:
                self._state = "content"
                return True
            return False
        if rest.startswith(PYTHON_TAG):
            i = _skip_whitespace(self.text, i + len(PYTHON_TAG))
            if i >= len(self.text) and not final:
                return False
        if self.text[i:i + 1] == "{":
            self._begin_call(markup_start=0, body_start=i, is_llama=True)
        else:
            self._state = "content"
        return True

    def _on_content(self, events, final) -> bool:
        tag = self.text.find(HERMES_OPEN, self._pos)
        if tag >= 0:
            self._emit_content(events, tag)
            self._begin_call(markup_start=tag, body_start=None, is_llama=False)
            self._pos = tag + len(HERMES_OPEN)
            return True
        held = 0 if final else partial_stop_length(self.text[self._pos:], [HERMES_OPEN])
        self._emit_content(events, len(self.text) - held)
        return False

    def _begin_call(self, markup_start: int, body_start: int | None, is_llama: bool) -> None:
        self._state, self._is_llama = "call", is_llama
        self._call_start, self._body_start = markup_start, body_start
        self._announced, self._num_args_sent = False, 0

    def _on_call(self, events, final) -> bool:
        if self._body_start is None:
            start = _skip_whitespace(self.text, self._pos)
            if start >= len(self.text):
                return self._give_up_call(events) if final else False
            self._body_start = start
        body = self.text[self._body_start:]
        scan = scan_call(body)
        if scan.is_invalid or (scan.end is not None and scan.name is None):
            return self._give_up_call(events)
        if scan.name is not None and (scan.args_start is not None or scan.end is not None):
            self._send_arguments(events, scan, body, final)
        if scan.end is not None:
            self._pos = self._body_start + scan.end
            self._state = "after_call"
            self.num_calls += 1
            return True
        if final:
            if not self._announced:
                return self._give_up_call(events)
            self.num_calls += 1  # cut short (max_tokens): what was sent stands
            self._pos, self._state = len(self.text), "content"
        return False

    def _send_arguments(self, events, scan: CallScan, body: str, final: bool) -> None:
        if scan.args_start is None:  # closed without arguments
            text = "{}"
        elif body[scan.args_start] == '"':  # arguments written as a JSON-encoded string
            if scan.args_end is None:
                return
            text = json.loads(body[scan.args_start:scan.args_end])
        else:
            text = body[scan.args_start:scan.args_end or len(body)]
        if not self._announced:
            self._announced = True
            events.append(ToolCallDelta(self.num_calls, "", f"call_{uuid.uuid4().hex[:24]}", scan.name))
        if len(text) > self._num_args_sent:
            events.append(ToolCallDelta(self.num_calls, text[self._num_args_sent:]))
            self._num_args_sent = len(text)

    def _give_up_call(self, events) -> bool:
        """Not a call after all: its text is content, and no Llama 3 call can start later."""
        if self._announced:
            self._pos, self._state = len(self.text), "content"
            return False
        self._pos, self._state = self._call_start, "content"
        next_tag = self.text.find(HERMES_OPEN, self._call_start + 1)
        self._emit_content(events, next_tag if next_tag >= 0 else len(self.text))
        return next_tag >= 0

    def _on_after_call(self, events, final) -> bool:
        i = _skip_whitespace(self.text, self._pos)
        rest = self.text[i:]
        closing = ";" if self._is_llama else HERMES_CLOSE
        if not rest or (closing.startswith(rest) and not final):
            if final:
                self._pos, self._state = len(self.text), "content"
            return False
        if rest.startswith(closing):
            i = _skip_whitespace(self.text, i + len(closing))
            if self._is_llama and i >= len(self.text) and not final:
                return False  # another call may follow the ";"
        if self._is_llama and self.text[i:i + 1] == "{":
            self._begin_call(markup_start=i, body_start=i, is_llama=True)
        else:
            self._pos, self._state = i, "content"
        return True

    def _emit_content(self, events, end: int) -> None:
        if end > self._pos:
            events.append(ContentDelta(self.text[self._pos:end]))
            self._pos = end


@dataclass
class ParsedToolCall:
    id: str
    name: str
    arguments: str


def parse_tool_calls(text: str) -> tuple[str, list[ParsedToolCall]]:
    """(content, tool calls) of a whole answer."""
    parser = ToolCallParser()
    content, calls = [], []
    for event in parser.feed(text) + parser.finish():
        if isinstance(event, ContentDelta):
            content.append(event.text)
        elif event.id is not None:
            calls.append(ParsedToolCall(event.id, event.name, event.arguments))
        else:
            calls[event.index].arguments += event.arguments
    return "".join(content), calls
