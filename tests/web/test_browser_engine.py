"""`lite gradio MODEL` in a browser: the model runs inside the demo's process."""
import pytest

from lite.engine.sequence import SamplingParams
from servers import LiteProcess

from .conftest import ChatPage, same_text

pytestmark = pytest.mark.browser

QUESTION = "What is the capital of France?"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def demo(smollm2_dir):  # smollm2_dir: the bundled GGUF is converted once, before the process needs it
    process = LiteProcess(["gradio", "--max-model-len", "1024", "--kv-cache-memory", "64MiB"], ready_path="/")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def chat(browser, demo):
    page = ChatPage(browser, demo.url)
    page.set_number("temperature", 0)
    page.set_number("max-tokens", MAX_TOKENS)
    return page


def test_the_page_names_the_model_and_how_it_runs(chat):
    info = chat.page.locator("#model-info").inner_text()
    for fact in ("SmolLM2-135M-Instruct", "in this process", "backend cpu", "weights unquantized (float32)",
                 "KV cache unquantized", "context 1024 tokens"):
        assert fact.lower() in info.lower(), fact
    # SmolLM2 reads no images: no upload button.
    assert chat.page.locator("#message button[aria-label*='upload' i]").count() == 0


def test_a_greedy_answer_equals_the_engines(chat, smollm2_engine):
    answer = chat.ask(QUESTION)
    expected = smollm2_engine.generate([[{"role": "user", "content": QUESTION}]],
                                       SamplingParams(temperature=0, max_tokens=MAX_TOKENS))[0].text
    assert answer.strip() and same_text(answer, expected), (answer, expected)
    assert "tokens/s" in chat.status()


def test_stop_ends_a_long_answer(chat):
    chat.clear()
    chat.set_number("max-tokens", 600)
    chat.send("Write a long story about a dragon who learns to fly.")
    stopped_at = chat.stop_once_answering()
    chat.assert_answer_stays(stopped_at)
    assert chat.status().endswith("stopped") and chat.box.is_enabled()
    chat.set_number("max-tokens", MAX_TOKENS)
