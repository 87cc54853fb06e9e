"""A reload in the middle of an answer: the page rejoins it instead of losing or cancelling it."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest

from tests.support.fake_llm import Scenario

from .conftest import Stack, Watched
from .test_chat_page import ANSWER, chat_id, send, stored

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Slow enough that the reload lands mid-answer: 300 tokens 10 ms apart, 3 s or more.
SLOW = Scenario(tokens=300, token_delay=0.01)

# Before the page's own script runs on the reloaded page: note each text the
# last answer bubble shows, so the test sees every step, not only where it ended.
RECORD_ANSWER_TEXTS = """
window.__answerTexts = [];
new MutationObserver(() => {
    const node = [...document.querySelectorAll('[data-role="assistant"]')].pop();
    const body = node && node.querySelector('.body');
    if (!body) return;
    const seen = window.__answerTexts;
    const entry = {status: node.dataset.status, text: body.textContent};
    const last = seen[seen.length - 1];
    if (!last || last.status !== entry.status || last.text !== entry.text) seen.push(entry);
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def words(text: str) -> list[str]:
    return text.split()


def test_a_reload_mid_answer_shows_the_text_so_far_then_the_rest(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched
) -> None:
    scenario(SLOW)
    page = watched.page
    page.goto(stack.url)
    send(page, "Count slowly")
    chat = chat_id(page)
    page.wait_for_function(
        """() => {
            const node = [...document.querySelectorAll('[data-role="assistant"]')].pop();
            return node && node.textContent.includes('t5 ');
        }"""
    )

    page.add_init_script(RECORD_ANSWER_TEXTS)
    page.reload()
    assert chat_id(page) == chat
    shown = page.locator(ANSWER)
    page.wait_for_selector(f'{ANSWER}:not([data-status="streaming"])', timeout=20_000)

    final = words(SLOW.text)
    answer = stored(stack, chat)[-1]
    # Not cancelled when the page that asked went away: it asked with detach.
    assert (answer["status"], words(answer["content"])) == ("complete", final)
    assert shown.last.get_attribute("data-status") == "complete"
    assert shown.count() == 1
    assert words(shown.last.locator(".body").inner_text()) == final
    assert page.get_by_test_id("message").count() == 2

    texts = page.evaluate("window.__answerTexts")
    streaming = [words(entry["text"]) for entry in texts if entry["status"] == "streaming"]
    streaming = [text for text in streaming if text]
    assert streaming, texts
    # The first text after the reload is the answer so far (a snapshot from its
    # start), not only the tokens that came after the page reconnected.
    assert streaming[0][:6] == final[:6]
    assert len(streaming[0]) < len(final)
    # Then the rest as it arrives: each step a longer start of the answer, none lost or doubled.
    assert len(streaming) > 1
    for before, after in pairwise(streaming):
        assert len(before) < len(after)
    for text in streaming:
        assert text == final[: len(text)]
    assert {entry["status"] for entry in texts} <= {"streaming", "complete"}
