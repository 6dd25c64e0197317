"""The official `openai` package, unmodified, against `lite serve` on the real SmolLM2-135M."""
import json

import pytest
from openai import OpenAI

from .conftest import MODEL

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 24},
                   "age": {"type": "integer", "minimum": 0, "maximum": 150},
                   "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3}},
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 32},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_models_entries_carry_lites_facts_for_uis(client):
    details = client.models.list().data[0].model_extra["lite"]
    assert details == {"backend": "cpu", "dtype": "float32", "weight_quantization": "none",
                       "kv_cache_dtype": "none", "vision": False, "generation_defaults": {}}


def test_chat_non_streaming_answers_with_usage(client):
    response = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, temperature=0)
    choice = response.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length") and choice.message.role == "assistant"
    usage = response.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_stream_concatenates_to_the_non_streaming_answer(client):
    whole = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_with_n_2_give_two_choices(client):
    response = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12,
                                         temperature=1.0, n=2, seed=7)
    assert sorted(c.index for c in response.choices) == [0, 1]
    assert all(c.text for c in response.choices)
    assert response.choices[0].text != response.choices[1].text  # each choice draws on its own
    assert response.usage.completion_tokens <= 24


def test_chat_n_2_streams_two_choices_that_match_non_streaming(client):
    request = dict(model=MODEL, messages=CHAT, max_tokens=16, temperature=0.9, seed=5, n=2)
    whole = client.chat.completions.create(**request)
    texts = {0: "", 1: ""}
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert [texts[0], texts[1]] == [c.message.content for c in sorted(whole.choices, key=lambda c: c.index)]
    assert whole.usage.completion_tokens <= 32


def test_stop_string_ends_the_answer_before_it(client):
    free = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    assert " 6," in free.choices[0].text
    stopped = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0,
                                        stop=[" 6"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == free.choices[0].text.split(" 6")[0]


def test_seed_reproduces_sampled_answers(client):
    def sample(seed):
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=24,
            temperature=1.0, top_p=0.95, seed=seed).choices[0].message.content
    first = sample(1234)
    assert sample(1234) == first
    assert sample(99) != first


def test_chat_logprobs_cover_every_token(client):
    response = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=0,
                                              logprobs=True, top_logprobs=3)
    choice = response.choices[0]
    tokens = choice.logprobs.content
    assert len(tokens) == response.usage.completion_tokens
    for token in tokens:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        # Greedy: the sampled token is the most likely one.
        assert token.top_logprobs[0].token == token.token
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)
    assert "".join(t.token for t in tokens).startswith(choice.message.content[:10])


def test_completion_logprobs_shape(client):
    response = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5,
                                         temperature=0, logprobs=2)
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 5
    assert "".join(logprobs.tokens) == response.choices[0].text
    assert logprobs.text_offset[0] == 0 and all(len(top) <= 2 for top in logprobs.top_logprobs)


def test_json_schema_output_parses_and_validates(client):
    for seed in range(3):  # sampled, so the grammar is what holds the output in shape
        response = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}],
            max_tokens=120, temperature=1.0, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}})
        assert response.choices[0].finish_reason == "stop"
        person = json.loads(response.choices[0].message.content)
        assert set(person) == {"name", "age", "pets"}
        assert isinstance(person["name"], str) and len(person["name"]) <= 24
        assert isinstance(person["age"], int) and 0 <= person["age"] <= 150
        assert isinstance(person["pets"], list) and set(person["pets"]) <= {"cat", "dog", "fish"}


def test_json_object_output_parses(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give me a JSON object about cats."}],
        max_tokens=80, temperature=0, response_format={"type": "json_object"})
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(response.choices[0].message.content), dict)
    else:  # cut by max_tokens: still a valid JSON prefix starting an object
        assert response.choices[0].message.content.startswith("{")


def test_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "What is the weather like in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                           tool_choice="required", max_tokens=64, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                            tool_choice="none", max_tokens=32, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_streamed_tool_call_arguments_concatenate_to_valid_json(client):
    request = dict(model=MODEL, messages=[{"role": "user", "content": "Weather in Oslo, please."}],
                   tools=[WEATHER_TOOL], max_tokens=64, temperature=0,
                   tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = client.chat.completions.create(**request).choices[0].message.tool_calls[0]
    deltas = [d for chunk in client.chat.completions.create(**request, stream=True) if chunk.choices
              for d in chunk.choices[0].delta.tool_calls or ()]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas) and len(deltas) > 2  # the arguments arrive in pieces
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == json.loads(whole.function.arguments)


def test_unknown_model_raises_not_found(client):
    import openai
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=CHAT, max_tokens=4)
