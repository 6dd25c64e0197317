"""The browser tests' Chromium (Debian's, never a downloaded one) and a page object for the chat."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ANSWER_TIMEOUT_MS = 120_000  # two shared CPU cores: generous


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per module."""
    if not CHROMIUM.exists():
        pytest.skip(f"the browser tests drive {CHROMIUM}, which is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


class ChatPage:
    """The demo's page as a person uses it: settings, a message, Stop, what the answer says."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.page.goto(url)
        self.box = self.page.locator("#message textarea")
        self.box.wait_for(timeout=60_000)

    def set_number(self, elem_id: str, value: float) -> None:
        field = self.page.locator(f"#{elem_id} input[type=number]")
        field.fill(str(value))
        field.press("Enter")

    def answers(self) -> list[str]:
        return self.page.locator("#chat [data-testid=bot]").all_inner_texts()

    def status(self) -> str:
        return self.page.locator("#status").inner_text()

    def send(self, text: str) -> None:
        self.box.fill(text)
        self.box.press("Enter")

    def ask(self, text: str) -> str:
        """Send `text` and wait for the whole answer: a new answer, and the box unlocked again."""
        num_answers = len(self.answers())
        self.send(text)
        self.page.wait_for_function(
            """n => document.querySelectorAll('#chat [data-testid=bot]').length === n + 1
                    && !document.querySelector('#message textarea').disabled""",
            arg=num_answers, timeout=ANSWER_TIMEOUT_MS)
        return self.answers()[-1]

    def stop_once_answering(self) -> str:
        """Click Stop once the answer has begun; the answer as it stands when Stop takes effect."""
        self.page.wait_for_function(
            """() => { const answers = document.querySelectorAll('#chat [data-testid=bot]');
                       return answers.length && answers[answers.length - 1].innerText.length > 10; }""",
            timeout=ANSWER_TIMEOUT_MS)
        self.page.locator("#stop").click()
        # The answer ends with a "stopped" status, then the message box unlocks.
        self.page.wait_for_function("""() => document.querySelector('#status').innerText.includes('stopped')
                                             && !document.querySelector('#message textarea').disabled""",
                                    timeout=30_000)
        return self.answers()[-1]

    def assert_answer_stays(self, text: str, seconds: float = 2.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.answers()[-1] == text, "the answer kept growing after Stop"
            time.sleep(0.2)

    def clear(self) -> None:
        self.page.locator("#clear").click()
        self.page.wait_for_function("() => !document.querySelector('#chat [data-testid=bot]')")


def same_text(shown: str, expected: str) -> bool:
    """The page renders answers as Markdown: compare words, not line breaks and spacing."""
    return " ".join(shown.split()) == " ".join(expected.split())
