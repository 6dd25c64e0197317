"""`lite gradio --api-url` against `lite serve` (two processes), and `lite serve --web` itself."""
import pytest

from lite.engine.sequence import SamplingParams
from servers import LiteProcess, read_metric, wait_until_idle

from .conftest import ChatPage, same_text

pytestmark = pytest.mark.browser

MODEL = "smol"
QUESTION = "What is the capital of France?"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def server(smollm2_dir):
    process = LiteProcess(["serve", str(smollm2_dir), "--served-model-name", MODEL, "--max-model-len", "1024",
                           "--kv-cache-memory", "64MiB", "--web"])
    yield process
    process.stop()


@pytest.fixture(scope="module")
def remote_demo(server):
    process = LiteProcess(["gradio", "--api-url", f"{server.url}/v1"], ready_path="/")
    yield process
    process.stop()


def greedy_page(browser, url: str) -> ChatPage:
    page = ChatPage(browser, url)
    page.set_number("temperature", 0)
    page.set_number("max-tokens", MAX_TOKENS)
    return page


@pytest.fixture(scope="module")
def expected_answer(smollm2_engine) -> str:
    return smollm2_engine.generate([[{"role": "user", "content": QUESTION}]],
                                   SamplingParams(temperature=0, max_tokens=MAX_TOKENS))[0].text


def test_the_remote_page_shows_what_lite_serve_reports(browser, remote_demo, server):
    info = ChatPage(browser, remote_demo.url).page.locator("#model-info").inner_text()
    for fact in (MODEL, f"{server.url}/v1", "backend cpu", "weights unquantized (float32)", "KV cache unquantized",
                 "context 1024 tokens"):
        assert fact in info, fact


def test_a_greedy_answer_over_the_api_equals_the_engines(browser, remote_demo, expected_answer):
    chat = greedy_page(browser, remote_demo.url)
    answer = chat.ask(QUESTION)
    assert answer.strip() and same_text(answer, expected_answer), (answer, expected_answer)
    assert "tokens/s" in chat.status()


def test_stop_over_the_api_aborts_the_request_on_the_server(browser, remote_demo, server):
    wait_until_idle(server.url)
    generated_before = read_metric(server.url, "lite_generation_tokens_total")
    chat = greedy_page(browser, remote_demo.url)
    chat.set_number("max-tokens", 600)
    chat.send("Write a long story about a dragon who learns to fly.")
    stopped_at = chat.stop_once_answering()
    # Closing the HTTP stream made lite serve abort the sequence: nothing runs, every block is free.
    wait_until_idle(server.url, timeout=10)
    chat.assert_answer_stays(stopped_at)
    assert read_metric(server.url, "lite_generation_tokens_total") - generated_before < 300
    assert chat.status().endswith("stopped")


def test_lite_serve_web_answers_beside_the_api(browser, server, expected_answer):
    chat = greedy_page(browser, f"{server.url}/web/")
    assert "lite serve" in chat.page.locator("#model-info").inner_text()
    answer = chat.ask(QUESTION)
    assert same_text(answer, expected_answer), (answer, expected_answer)


def test_a_server_that_went_away_is_reported_in_the_page(browser, remote_demo, server):
    # Last in this module: it stops the server.
    chat = greedy_page(browser, remote_demo.url)
    server.stop()
    chat.send(QUESTION)
    chat.page.wait_for_function("""() => document.querySelector('#status').innerText.includes('Cannot reach')
                                         && !document.querySelector('#message textarea').disabled""",
                                timeout=30_000)
    assert f"Cannot reach the server at {server.url}/v1" in chat.status()
    assert chat.answers() == []
