"""Under load: concurrent streams stay independent, disconnects free KV blocks, overload is refused."""
import asyncio
import json
import time

import httpx
import pytest
from openai import AsyncOpenAI

from .conftest import API_KEY, MODEL

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "Give three tips for writing clean Python code.", "Count from one to ten.",
           "Why is the sky blue? Answer in one sentence.", "Name a fruit that is yellow.",
           "Translate 'good morning' into Spanish.", "What is 12 times 12?"]
CLIENTS_PER_PROMPT = 4  # 32 concurrent clients
NEAR_TIE = 1e-3
GREEDY = dict(max_tokens=24, temperature=0, logprobs=True, top_logprobs=2)


def assert_same_greedy_tokens(ours: list, reference: list) -> None:
    """Token for token, except that a batched run may part ways where the single run's top two
    tokens were a near tie. Batching changes the shapes of the matmuls (a 32-row decode instead of
    one row), so float32 sums differ in their last bits and a 1e-3 tie may flip: numerics, not a
    mix-up between requests, which would differ from the first token on."""
    tokens, expected = [t.token for t in ours], [t.token for t in reference]
    split = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), None)
    if split is None:
        assert tokens == expected
        return
    best, second = reference[split].top_logprobs[:2]
    assert tokens[split] == second.token and best.logprob - second.logprob < NEAR_TIE, (
        f"diverged at token {split} where the single run was not a near tie")


async def stream_chat(client: AsyncOpenAI, prompt: str) -> list:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True, **GREEDY)
    tokens = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs:
            tokens += chunk.choices[0].logprobs.content
    return tokens


def test_32_concurrent_streams_match_single_requests(server):
    async def main():
        client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
        singles = []
        for prompt in PROMPTS:
            response = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], **GREEDY)
            singles.append(response.choices[0].logprobs.content)
        peak_running = 0

        async def watch(done: asyncio.Event):
            nonlocal peak_running
            async with httpx.AsyncClient() as http:
                while not done.is_set():
                    text = (await http.get(f"{server.url}/metrics")).text
                    line = next(l for l in text.splitlines() if l.startswith("lite_num_requests_running "))
                    peak_running = max(peak_running, float(line.split()[1]))
                    await asyncio.sleep(0.05)

        done = asyncio.Event()
        watcher = asyncio.create_task(watch(done))
        batched = await asyncio.gather(*(stream_chat(client, prompt)
                                         for prompt in PROMPTS for _ in range(CLIENTS_PER_PROMPT)))
        done.set()
        await watcher
        return singles, batched, peak_running

    singles, batched, peak_running = asyncio.run(main())
    assert peak_running >= 16, "the clients were not served concurrently"
    for i, tokens in enumerate(batched):
        assert_same_greedy_tokens(tokens, singles[i // CLIENTS_PER_PROMPT])
    server.wait_until_idle()


def test_disconnect_mid_stream_aborts_and_frees_kv_blocks(server):
    server.wait_until_idle()
    generated_before = server.metric("lite_generation_tokens_total")
    body = {"model": MODEL, "prompt": "One, two, three,", "max_tokens": 400, "ignore_eos": True,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        events = []
        for line in lines:
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
            if len(events) == 3:
                break
        assert server.metric("lite_kv_blocks_used") > 0  # the sequence holds blocks while it runs
    # The client is gone: the sequence stops long before its 400 tokens and returns every block.
    server.wait_until_idle(timeout=10)
    assert server.metric("lite_generation_tokens_total") - generated_before < 100


def test_disconnect_before_a_non_streaming_answer_aborts_it(server):
    server.wait_until_idle()
    generated_before = server.metric("lite_generation_tokens_total")
    body = {"model": MODEL, "prompt": "One, two, three,", "max_tokens": 400, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=1.5)
    server.wait_until_idle(timeout=10)
    assert server.metric("lite_generation_tokens_total") - generated_before < 200


def test_overload_is_refused_with_retry_after_then_served_again(strict_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    long_request = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True,
                    "stream": True}

    async def main():
        async with httpx.AsyncClient(base_url=strict_server.url, headers=headers, timeout=60) as http:
            streams = []
            for _ in range(3):  # two decode slots plus one queued sequence: full
                response = await http.send(http.build_request("POST", "/v1/completions", json=long_request),
                                           stream=True)
                assert response.status_code == 200
                streams.append(response)
            refused = await http.post("/v1/completions", json={**long_request, "stream": False})
            for response in streams:
                await response.aclose()
            return refused

    refused = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    assert refused.json()["error"]["code"] == "server_overloaded"
    strict_server.wait_until_idle(timeout=15)
    assert strict_server.metric("lite_requests_refused_total") == 1
    served = httpx.post(f"{strict_server.url}/v1/completions", headers=headers, timeout=60,
                        json={"model": MODEL, "prompt": "Hello", "max_tokens": 4})
    assert served.status_code == 200
