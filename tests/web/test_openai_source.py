"""The OpenAI-compatible source against scripted server answers: model facts, streaming, and
failures turned into sentences."""
import asyncio
import re
import json

import httpx
import pytest

from lite.web.errors import ChatError
from lite.web.openai_source import OpenAIChatSource
from lite.web.settings import GenerationSettings
from servers import free_port

API_URL = "http://server.test/v1"
LITE_CARD = {"id": "smol", "object": "model", "created": 0, "owned_by": "lite", "max_model_len": 2048,
             "lite": {"backend": "cuda", "dtype": "bfloat16", "weight_quantization": "awq int4, group 128",
                      "kv_cache_dtype": "int8", "vision": True, "generation_defaults": {"temperature": 0.6}}}
CHAT = [{"role": "user", "content": "Hi"}]


def sse(*events) -> bytes:
    return "".join(f"data: {json.dumps(e) if isinstance(e, dict) else e}\n\n" for e in events).encode()


def chunk(text):
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def source_answering(handler, **options) -> OpenAIChatSource:
    return OpenAIChatSource(API_URL, transport=httpx.MockTransport(handler), **options)


def collect(source, settings=GenerationSettings()):
    async def main():
        return [delta async for delta in source.stream(CHAT, settings)]
    return asyncio.run(main())


def test_lite_serves_its_facts_in_the_model_card():
    source = source_answering(lambda request: httpx.Response(200, json={"data": [LITE_CARD]}))
    info = asyncio.run(source.info())
    assert (info.name, info.backend, info.dtype, info.weight_quantization, info.kv_cache_dtype) == (
        "smol", "cuda", "bfloat16", "awq int4, group 128", "int8")
    assert info.is_vision and info.max_model_len == 2048 and info.generation_defaults == {"temperature": 0.6}


def test_another_servers_card_gives_the_name_alone():
    source = source_answering(lambda request: httpx.Response(200, json={"data": [{"id": "gpt-x"}]}))
    info = asyncio.run(source.info())
    assert info.name == "gpt-x" and info.backend is None and info.weight_quantization is None
    assert not info.is_vision


def test_a_model_the_server_lacks_is_named_with_what_it_has():
    source = source_answering(lambda request: httpx.Response(200, json={"data": [LITE_CARD]}), model="big")
    with pytest.raises(ChatError, match="does not serve 'big'; it serves smol"):
        asyncio.run(source.info())


def test_stream_sends_the_settings_and_counts_tokens_until_the_usage_says():
    requests = []

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [LITE_CARD]})
        requests.append(json.loads(request.content))
        return httpx.Response(200, content=sse(chunk("Hel"), ": keep-alive", chunk("lo"),
                                               {"choices": [], "usage": {"completion_tokens": 3}}, "[DONE]"))

    deltas = collect(source_answering(handler, api_key="k"), GenerationSettings(0.0, 0.9, 16, ("END",)))
    assert [(d.text, d.num_tokens) for d in deltas] == [("Hel", 1), ("lo", 2), ("", 3)]
    assert requests == [{"model": "smol", "messages": CHAT, "stream": True,
                         "stream_options": {"include_usage": True}, "temperature": 0.0, "top_p": 0.9,
                         "max_tokens": 16, "stop": ["END"]}]


def test_the_api_key_goes_in_the_authorization_header():
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"data": [LITE_CARD]})

    asyncio.run(source_answering(handler, api_key="secret").info())
    asyncio.run(source_answering(handler).info())
    assert seen == ["Bearer secret", None]


@pytest.mark.parametrize("status, body, says", [
    (400, {"error": {"message": "the prompt has 3000 tokens but this model's context holds 2048",
                     "code": "context_length_exceeded"}}, "too long for the model's context"),
    (401, {"error": {"message": "a valid API key is required"}}, "needs an API key: start lite gradio with --api-key"),
    (503, {"error": {"message": "overloaded"}}, "busy (503)"),
    (404, "Not Found", "Check --api-url"),
    (500, "boom", "refused the request (500): boom"),
])
def test_refusals_become_sentences(status, body, says):
    def handler(request):
        return httpx.Response(status, **({"json": body} if isinstance(body, dict) else {"text": body}))

    with pytest.raises(ChatError, match=re.escape(says)):
        collect(source_answering(handler, model="smol"))


def test_a_failure_after_the_stream_began_is_reported():
    def handler(request):
        return httpx.Response(200, content=sse(chunk("Hi"), {"error": {"message": "generation failed: oom"}}))

    with pytest.raises(ChatError, match="failed while answering: generation failed: oom"):
        collect(source_answering(handler, model="smol"))


def test_an_unreachable_server_says_so():
    source = OpenAIChatSource(f"http://127.0.0.1:{free_port()}/v1", model="smol")  # nothing listens
    with pytest.raises(ChatError, match="Cannot reach the server at http://127.0.0.1:.*Is it running"):
        collect(source)
    with pytest.raises(ChatError, match="Cannot reach"):
        asyncio.run(source.info())


def test_a_url_that_is_no_openai_api_says_what_to_check():
    source = source_answering(lambda request: httpx.Response(200, text="<html>hello</html>"))
    with pytest.raises(ChatError, match="usually ends in /v1"):
        asyncio.run(source.info())
