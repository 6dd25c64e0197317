"""The tool-call parser on handwritten model outputs: Hermes <tool_call> and Llama 3 JSON, whole and streamed."""
import json

import pytest

from lite.serve.tool_calls import ContentDelta, ToolCallParser, parse_tool_calls

HERMES_ONE = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
              '{"city": "Paris", "days": [1, 2], "note": "braces } { and \\"quotes\\""}}\n</tool_call>')
HERMES_TWO = ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
              '<tool_call>\n{"arguments": {"y": true}, "name": "b"}\n</tool_call>')
LLAMA_ONE = '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}'
LLAMA_TWO = '<|python_tag|>{"name": "f", "parameters": {"a": 1.5}}; {"name": "g", "parameters": {}}'


def stream(text: str, piece: int):
    """(content, [(id, name, arguments)]) from feeding `text` in pieces of `piece` characters."""
    parser = ToolCallParser()
    events = []
    for start in range(0, len(text), piece):
        events += parser.feed(text[start:start + piece])
    events += parser.finish()
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls: dict[int, list] = {}
    for e in events:
        if isinstance(e, ContentDelta):
            continue
        if e.id is not None:
            assert e.index not in calls, "id and name come once per call"
            calls[e.index] = [e.id, e.name, ""]
        calls[e.index][2] += e.arguments
    return content, [tuple(calls[i]) for i in sorted(calls)], parser.num_calls


@pytest.mark.parametrize("text, content, calls", [
    (HERMES_ONE, "Let me check.\n",
     [("get_weather", {"city": "Paris", "days": [1, 2], "note": 'braces } { and "quotes"'})]),
    (HERMES_TWO, "", [("a", {"x": 1}), ("b", {"y": True})]),
    (LLAMA_ONE, "", [("get_weather", {"city": "Oslo", "unit": "celsius"})]),
    (LLAMA_TWO, "", [("f", {"a": 1.5}), ("g", {})]),
    ('<tool_call>{"name": "f", "arguments": "{\\"q\\": 2}"}</tool_call>', "", [("f", {"q": 2})]),
    ('<tool_call>{"name": "f"}</tool_call>', "", [("f", {})]),
])
def test_whole_text_parses_into_calls_and_content(text, content, calls):
    parsed_content, parsed = parse_tool_calls(text)
    assert parsed_content == content
    assert [(c.name, json.loads(c.arguments)) for c in parsed] == calls
    assert len({c.id for c in parsed}) == len(parsed) and all(c.id.startswith("call_") for c in parsed)


@pytest.mark.parametrize("text", [HERMES_ONE, HERMES_TWO, LLAMA_ONE, LLAMA_TWO])
@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
def test_streamed_argument_deltas_concatenate_to_the_whole_parse(text, piece):
    content, calls, num_calls = stream(text, piece)
    whole_content, whole_calls = parse_tool_calls(text)
    assert content == whole_content and num_calls == len(whole_calls)
    assert [(name, args) for _, name, args in calls] == [(c.name, c.arguments) for c in whole_calls]
    for _, _, arguments in calls:
        json.loads(arguments)


def test_arguments_stream_before_the_call_is_complete():
    parser = ToolCallParser()
    events = parser.feed('<tool_call>\n{"name": "search", "arguments": {"query": "lite ser')
    assert events[0].name == "search" and events[0].id
    assert "".join(e.arguments for e in events) == '{"query": "lite ser'
    more = parser.feed('ving"}}\n</tool_call>') + parser.finish()
    assert "".join(e.arguments for e in more) == 'ving"}'
    assert parser.num_calls == 1


def test_content_that_only_looks_like_a_tag_is_released():
    parser = ToolCallParser()
    assert parser.feed("a <tool") == [ContentDelta("a ")]  # "<tool" may begin a tag: held back
    assert parser.feed(" box>") == [ContentDelta("<tool box>")]
    assert parser.finish() == []


@pytest.mark.parametrize("text", [
    "Plain answer, no calls.",
    '{"answer": 42, "unit": "m"}',  # JSON, but not a call: stays content
    "<tool_call> this is not JSON",
    '{"name": 42, "parameters": {}}',  # a name that is not a string
])
def test_text_without_a_call_is_content(text):
    assert parse_tool_calls(text) == (text, [])


@pytest.mark.parametrize("text, arguments", [
    ('<tool_call>{"name": "f", "arguments": {"a": tr', '{"a": tr'),
    ('{"name": "f", "parameters": {"a": 1}', '{"a": 1}'),
])
def test_truncated_call_keeps_what_was_streamed(text, arguments):
    # max_tokens hit mid-call (finish_reason "length"): the call stands as far as it got.
    content, calls = parse_tool_calls(text)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("f", arguments)]


def test_without_parallel_tool_calls_a_stream_carries_only_the_first_call():
    from lite.serve.routes.chat import _delta_from_events

    parser = ToolCallParser()
    delta = _delta_from_events(parser.feed(HERMES_TWO) + parser.finish(), max_calls=1)
    assert [(d.index, d.function.name) for d in delta.tool_calls] == [(0, "a")]
    assert json.loads(delta.tool_calls[0].function.arguments) == {"x": 1}
