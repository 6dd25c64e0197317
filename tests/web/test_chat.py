"""One chat turn: the answer streams into the history with its speed; Stop aborts; failures read
as sentences. With scripted sources, and with the engine source on the real SmolLM2."""
import asyncio
import itertools

import pytest

from lite.engine.async_engine import AsyncLLMEngine
from lite.engine.sequence import SamplingParams
from lite.model_info import describe_engine
from lite.web.chat import AnswerSpeed, StopButtons, stream_reply
from lite.web.engine_source import EngineChatSource
from lite.web.errors import ChatError
from lite.web.settings import GenerationSettings
from lite.web.source import AnswerDelta

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY_FORM = (0.0, 1.0, 24, "")


class ScriptedSource:
    """Yields `deltas`, then raises `error` if given, else waits forever (until closed)."""

    def __init__(self, deltas, error=None, wait_forever=False):
        self.deltas, self.error, self.wait_forever = deltas, error, wait_forever
        self.messages, self.closed = None, False

    async def stream(self, messages, settings):
        self.messages = messages
        try:
            for delta in self.deltas:
                yield delta
            if self.error:
                raise self.error
            if self.wait_forever:
                await asyncio.Event().wait()
        finally:
            self.closed = True


def run_reply(source, history=QUESTION, form=GREEDY_FORM, system_prompt="", stop=None, clock=None):
    async def main():
        updates = []
        options = {"clock": clock} if clock else {}
        async for update in stream_reply(source, history, system_prompt, form, stop or asyncio.Event(),
                                         **options):
            updates.append((update[0] and [dict(m) for m in update[0]], update[1]))
        return updates
    return asyncio.run(main())


def test_the_answer_streams_into_the_history_with_its_speed():
    source = ScriptedSource([AnswerDelta("Paris", 1), AnswerDelta(" it", 2), AnswerDelta(" is.", 3)])
    ticks = itertools.count()  # started at 0 s, tokens at 1, 2 and 3 s
    updates = run_reply(source, system_prompt="Be brief.", clock=lambda: float(next(ticks)))
    assert source.messages == [{"role": "system", "content": "Be brief."}, *QUESTION]
    history, status = updates[-1]
    assert history == [*QUESTION, {"role": "assistant", "content": "Paris it is."}]
    assert status == "3 tokens · 1.0 tokens/s · first token after 1.00 s"
    assert [h[-1]["content"] for h, _ in updates] == ["Paris", "Paris it", "Paris it is."]


def test_stop_ends_the_reply_and_closes_the_source_stream():
    source = ScriptedSource([AnswerDelta("Once", 1)], wait_forever=True)

    async def main():
        stop = asyncio.Event()
        updates = []
        async for update in stream_reply(source, QUESTION, "", GREEDY_FORM, stop):
            updates.append(update)
            stop.set()  # Stop pressed once the first words show
        return updates

    updates = asyncio.run(main())
    assert updates[-1][0] is None  # the chat keeps the partial answer already shown
    assert updates[-1][1].endswith("· stopped") and source.closed


def test_a_source_error_shows_as_a_sentence_and_keeps_the_question():
    source = ScriptedSource([], error=ChatError("Cannot reach the server at http://x/v1 (refused). Is it running?"))
    history, status = run_reply(source)[-1]
    assert history == QUESTION
    assert status == "⚠️ Cannot reach the server at http://x/v1 (refused). Is it running?"


def test_an_unexpected_failure_shows_one_line_not_a_trace():
    source = ScriptedSource([AnswerDelta("Par", 1)], error=KeyError("choices"))
    history, status = run_reply(source)[-1]
    assert history[-1] == {"role": "assistant", "content": "Par"}  # what arrived stays
    assert status == "⚠️ Answering failed: KeyError: 'choices'"


def test_bad_settings_are_reported_before_anything_is_sent():
    source = ScriptedSource([AnswerDelta("x", 1)])
    assert run_reply(source, form=(0.5, 1.0, 0, "")) == [(QUESTION, "⚠️ max tokens must be at least 1, got 0")]
    assert source.messages is None


def test_nothing_is_sent_when_the_last_message_is_not_a_question():
    source = ScriptedSource([AnswerDelta("x", 1)])
    assert run_reply(source, history=[]) == []
    assert run_reply(source, history=[*QUESTION, {"role": "assistant", "content": "Paris."}]) == []


def test_speed_waits_for_a_first_token():
    assert AnswerSpeed(started=0.0).summary() == "waiting for the first token..."


def test_stop_buttons_stop_only_their_own_session():
    async def main():
        buttons = StopButtons()
        mine, theirs = buttons.arm("me"), buttons.arm("them")
        buttons.press("me")
        buttons.press("nobody")
        return mine.is_set(), theirs.is_set()
    assert asyncio.run(main()) == (True, False)


# ---- the engine source on the real model ----

@pytest.fixture(scope="module")
def engine_source(smollm2_engine):
    engine = AsyncLLMEngine(smollm2_engine)
    yield EngineChatSource(engine, describe_engine(smollm2_engine, "smol"))
    engine.shutdown()


def test_engine_source_greedy_answer_equals_the_engines(engine_source, smollm2_engine):
    updates = run_reply(engine_source)
    answer = updates[-1][0][-1]["content"]
    expected = smollm2_engine.generate([QUESTION], SamplingParams(temperature=0, max_tokens=24))[0]
    assert answer == expected.text and answer
    assert updates[-1][1].startswith(f"{len(expected.token_ids)} tokens · ")


def test_engine_source_stop_frees_the_kv_blocks(engine_source, smollm2_engine):
    async def main():
        stop = asyncio.Event()
        num_updates = 0
        async for _ in stream_reply(engine_source, [{"role": "user", "content": "Tell a long story."}], "",
                                    (0.0, 1.0, 500, ""), stop):
            num_updates += 1
            if num_updates == 3:
                assert smollm2_engine.stats()["num_running"] == 1
                stop.set()
        for _ in range(100):  # the abort reaches the engine thread within a step
            stats = smollm2_engine.stats()
            if stats["num_running"] == 0 and stats["num_free_kv_blocks"] == stats["num_kv_blocks"]:
                break
            await asyncio.sleep(0.05)
        return stats

    stats = asyncio.run(main())
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"]


def test_engine_source_says_when_the_chat_outgrows_the_context(engine_source):
    long_question = [{"role": "user", "content": "word " * 1100}]
    history, status = run_reply(engine_source, history=long_question)[-1]
    assert history == long_question
    assert status.startswith("⚠️ The conversation is too long for the model's context (")
    assert "the model holds 1024" in status and "Clear the chat" in status


def test_engine_source_refuses_images_until_lite_reads_them(engine_source):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}

    async def main():
        return [d async for d in engine_source.stream([{"role": "user", "content": [image]}],
                                                      GenerationSettings())]

    with pytest.raises(ChatError, match="does not read images yet"):
        asyncio.run(main())
