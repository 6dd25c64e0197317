"""AsyncLLMEngine: concurrent streams, cancellation, errors."""
import asyncio

import pytest

from lite.engine.async_engine import AsyncLLMEngine
from lite.engine.sequence import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=24)
PROMPTS = ["The capital of France is", "One, two, three,", "def fibonacci(n):"]


@pytest.fixture(scope="module", params=[False, True], ids=["sync-scheduling", "async-scheduling"])
def async_engine(request, smollm2_engine):
    # With async scheduling (CUDA's default) a stream's tokens and aborts meet steps in flight.
    smollm2_engine.async_scheduling = request.param
    engine = AsyncLLMEngine(smollm2_engine)
    yield engine
    engine.shutdown()
    smollm2_engine.async_scheduling = False


async def collect(async_engine, prompt, params=GREEDY):
    text, last = "", None
    async for output in async_engine.generate(prompt, params):
        text += output.delta_text
        last = output
    return text, last


def test_concurrent_streams_equal_their_final_outputs(async_engine, smollm2_engine):
    async def main():
        return await asyncio.gather(*(collect(async_engine, p) for p in PROMPTS))
    results = asyncio.run(main())
    for text, last in results:
        assert last.finished and text == last.text and text


def test_streamed_deltas_concatenate_to_the_sync_output(async_engine, smollm2_engine):
    text, last = asyncio.run(collect(async_engine, PROMPTS[0]))
    expected = smollm2_engine.tokenizer.decode(last.token_ids)
    assert text == expected


def test_closing_a_stream_aborts_the_request_and_frees_its_blocks(async_engine, smollm2_engine):
    async def main():
        stream = async_engine.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=500, ignore_eos=True))
        async for _ in stream:
            break
        await stream.aclose()
        for _ in range(100):
            if not smollm2_engine.has_unfinished():
                break
            await asyncio.sleep(0.05)
    asyncio.run(main())
    assert not smollm2_engine.has_unfinished()
    assert smollm2_engine.block_manager.num_free_blocks == smollm2_engine.num_kv_blocks


def test_bad_prompt_raises_before_streaming(async_engine):
    async def main():
        async for _ in async_engine.generate("hi " * 5000, GREEDY):
            pass
    with pytest.raises(ValueError, match="shorten the prompt"):
        asyncio.run(main())
