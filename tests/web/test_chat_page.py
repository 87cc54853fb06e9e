"""The chat page in a real Chromium: streaming, stop, history, errors, the token prompt."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.fake_llm import Scenario

from .conftest import FIRST_TOKEN_S, TOKEN, Server, Stack, Watched, closed_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ANSWER = '[data-testid="message"][data-role="assistant"]'


def send(page, text: str) -> None:
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send").click()


def chat_id(page) -> str:
    # Predicates are functions: a bare expression is polled with eval(), which the
    # page's Content-Security-Policy forbids.
    page.wait_for_function("() => location.hash.startsWith('#chat=')")
    return page.evaluate("decodeURIComponent(location.hash.slice(6))")


def stored(stack_or_server: Stack | Server, chat: str, token: str | None = None) -> list[dict]:
    server = stack_or_server.server if isinstance(stack_or_server, Stack) else stack_or_server
    with server.client(token) as client:
        response = client.get(f"/api/chats/{chat}")
        response.raise_for_status()
        return response.json()["messages"]


def test_an_answer_streams_in_and_is_complete(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched
) -> None:
    scenario(Scenario(tokens=["Hello", ", ", "**streamed**", " world", "."] * 6, token_delay=0.05))
    page = watched.page
    page.goto(stack.url)
    send(page, "Say hello")

    answer = page.locator(ANSWER).last
    # Part of the answer is on the page while the rest is still coming.
    page.wait_for_function(
        """() => {
            const node = [...document.querySelectorAll('[data-role="assistant"]')].pop();
            return node && node.dataset.status === 'streaming'
                && node.textContent.includes('Hello');
        }"""
    )
    assert answer.get_attribute("data-status") == "streaming"
    partial = answer.locator(".body").inner_text()
    assert 0 < len(partial) < len("Hello, streamed world." * 6)

    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    assert answer.locator(".body").inner_text() == "Hello, streamed world." * 6
    assert answer.locator("strong").first.inner_text() == "streamed"
    user = page.locator('[data-testid="message"][data-role="user"]')
    assert user.inner_text().endswith("Say hello")

    items = page.get_by_test_id("chat-item")
    assert items.first.inner_text().startswith("Say hello")
    messages = stored(stack, chat_id(page))
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "complete"


def test_stop_cancels_the_answer_and_it_is_stored_cancelled(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched
) -> None:
    scenario(Scenario(tokens=400, token_delay=0.02))
    page = watched.page
    page.goto(stack.url)
    send(page, "Count slowly")
    page.wait_for_function(
        """() => {
            const node = [...document.querySelectorAll('[data-role="assistant"]')].pop();
            return node && node.textContent.includes('t3 ');
        }"""
    )
    page.get_by_test_id("stop").click()

    page.wait_for_selector(f'{ANSWER}[data-status="cancelled"]')
    shown = page.locator(ANSWER).last.locator(".body").inner_text()
    assert shown.startswith("t0 t1 t2 t3")
    assert page.get_by_test_id("stop").is_disabled()
    # The server stores the answer before it announces the end, so it is there now.
    answer = stored(stack, chat_id(page))[-1]
    assert answer["status"] == "cancelled"
    assert answer["content"].startswith("t0 t1 t2 t3 ")
    assert len(answer["content"]) < len(Scenario(tokens=400).text)
    assert answer["content"].strip() == shown.strip()


def test_a_reload_shows_the_chats_newest_first_and_the_history(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched
) -> None:
    scenario(Scenario(tokens=["First answer."]))
    page = watched.page
    page.goto(stack.url)
    send(page, "older chat")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    page.get_by_test_id("new-chat").click()
    assert page.locator('[data-testid="message"]').count() == 0
    scenario(Scenario(tokens=["Second ", "answer ", "with `code`:\n\n```python\nprint('hi')\n```"]))
    send(page, "newer chat")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    newer = chat_id(page)

    page.reload()
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    assert chat_id(page) == newer
    messages = page.get_by_test_id("message")
    assert messages.count() == 2
    assert messages.nth(0).get_attribute("data-role") == "user"
    assert messages.nth(0).inner_text().endswith("newer chat")
    assert page.locator(f"{ANSWER} pre code.language-python").inner_text() == "print('hi')"
    assert page.locator(f"{ANSWER} :not(pre) > code").inner_text() == "code"
    titles = page.get_by_test_id("chat-item").all_inner_texts()
    assert titles.index(next(t for t in titles if t.startswith("newer chat"))) < titles.index(
        next(t for t in titles if t.startswith("older chat"))
    )

    page.get_by_test_id("chat-item").filter(has_text="older chat").click()
    page.wait_for_selector(f'{ANSWER}:has-text("First answer.")')
    assert page.get_by_test_id("message").count() == 2


def test_an_answer_cannot_inject_markup(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched
) -> None:
    hostile = [
        "<script>window.__injected = 'script'</script>\n\n",
        '<img src="/nope.png" onerror="window.__injected = \'img\'">\n\n',
        "[click me](javascript:window.__injected='link') and **<b>bold</b>**\n\n",
        "```html\n<script>window.__injected = 'fence'</script>\n```\n",
    ]
    scenario(Scenario(tokens=hostile, token_delay=0.02))
    page = watched.page
    page.goto(stack.url)
    send(page, "<i>not italic</i> <script>window.__injected = 'mine'</script>")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')

    body = page.locator(ANSWER).last.locator(".body")
    text = body.inner_text()
    assert "<script>window.__injected = 'script'</script>" in text
    assert "onerror=" in text
    assert "<b>bold</b>" in text
    for tag in ("script", "img", "b", "i", "iframe"):
        assert page.locator(f'[data-testid="message"] {tag}').count() == 0
    assert body.locator("a").count() == 0  # javascript: links stay text
    assert body.locator("pre code.language-html").inner_text() == (
        "<script>window.__injected = 'fence'</script>"
    )
    assert page.evaluate("window.__injected") is None
    user = page.locator('[data-testid="message"][data-role="user"]').last
    assert user.locator(".body").inner_text() == (
        "<i>not italic</i> <script>window.__injected = 'mine'</script>"
    )


def test_a_down_llm_shows_the_error_and_the_failed_answer(
    fresh_server: Callable[..., Server], watched: Watched
) -> None:
    server = fresh_server(llm_url=f"http://127.0.0.1:{closed_port()}")
    page = watched.page
    page.goto(server.url)
    send(page, "Is anyone there?")

    error = page.get_by_test_id("error")
    error.wait_for(state="visible")
    assert "language model is unavailable" in error.inner_text()
    assert "llm_unavailable" in error.inner_text()
    page.wait_for_selector(f'{ANSWER}[data-status="failed"]')
    assert stored(server, chat_id(page))[-1]["status"] == "failed"
    # The page stays usable: the composer is ready for the next try.
    assert page.get_by_test_id("send").is_enabled()
    assert page.get_by_test_id("stop").is_disabled()


def test_an_expired_deadline_is_shown_with_its_scope(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched
) -> None:
    scenario(Scenario(tokens=["late"], first_token_delay=FIRST_TOKEN_S + 5))
    page = watched.page
    page.goto(stack.url)
    send(page, "Take your time")

    error = page.get_by_test_id("error")
    error.wait_for(state="visible", timeout=(FIRST_TOKEN_S + 5) * 1000)
    assert "llm.first_token" in error.inner_text()
    assert f"after {FIRST_TOKEN_S:g} s" in error.inner_text()
    page.wait_for_selector(f'{ANSWER}[data-status="failed"]')


def test_the_page_asks_for_the_token_and_keeps_it_for_the_tab(
    fresh_server: Callable[..., Server], watched: Watched
) -> None:
    server = fresh_server(AUTOBOT_API_TOKEN=TOKEN)
    # Each refused request is logged by the browser itself as a failed resource load.
    watched.expect_console(r"status of 401")
    page = watched.page
    page.goto(server.url)

    prompt = page.get_by_test_id("token-prompt")
    prompt.wait_for(state="visible")
    page.get_by_test_id("token-input").fill("wrong-token")
    page.get_by_test_id("token-submit").click()
    page.wait_for_function(
        "() => document.getElementById('token-reason').textContent.includes('did not accept')"
    )
    prompt.wait_for(state="visible")
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-submit").click()
    prompt.wait_for(state="hidden")
    assert page.evaluate("sessionStorage.getItem('autobot.token')") == TOKEN

    # The WebSocket carries it as ?token=: the answer streams.
    send(page, "Authenticated?")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    assert stored(server, chat_id(page), TOKEN)[-1]["status"] == "complete"

    page.reload()
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    assert not prompt.is_visible()


def test_a_lost_connection_is_retried_until_the_server_is_back(
    fresh_server: Callable[..., Server], watched: Watched
) -> None:
    server = fresh_server()
    watched.expect_console(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")
    page = watched.page
    page.goto(server.url)
    send(page, "before")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')

    server.stop()
    error = page.get_by_test_id("error")
    error.wait_for(state="visible")
    assert "reconnecting" in error.inner_text()
    page.wait_for_selector('[data-testid="connection"][data-state="reconnecting"]')

    server.restart()
    page.wait_for_selector('[data-testid="connection"][data-state="connected"]', timeout=15_000)
    assert error.is_hidden()
    send(page, "after")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"] >> nth=1')
    assert page.get_by_test_id("message").count() == 4


def test_the_page_works_at_phone_width(
    stack: Stack, scenario: Callable[[Scenario], None], phone: Watched
) -> None:
    scenario(Scenario(tokens=["A long answer " * 20, "\n\n```\n" + "x" * 200 + "\n```"]))
    page = phone.page
    page.goto(stack.url)
    send(page, "On a phone")
    page.wait_for_selector(f'{ANSWER}[data-status="complete"]')
    # Nothing is wider than the screen: long lines wrap, code blocks scroll inside.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.get_by_test_id("send").is_visible()
    assert page.get_by_test_id("chat-list").is_hidden()

    page.get_by_test_id("toggle-chats").click()
    page.get_by_test_id("chat-item").first.wait_for(state="visible")
    assert page.get_by_test_id("chat-item").first.inner_text().startswith("On a phone")
    page.get_by_test_id("new-chat").click()
    assert page.get_by_test_id("chat-list").is_hidden()
    assert page.get_by_test_id("message").count() == 0

    page.get_by_test_id("toggle-operations").click()
    assert page.get_by_test_id("operation-type").is_visible()
    assert page.get_by_test_id("operation-start").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_another_device_on_the_chat_sees_the_answer_stream_and_can_stop_it(
    stack: Stack, scenario: Callable[[Scenario], None], watched: Watched, second_tab: Watched
) -> None:
    scenario(Scenario(tokens=400, token_delay=0.02))
    asker, other = watched.page, second_tab.page
    asker.goto(stack.url)
    send(asker, "Seen twice")
    chat = chat_id(asker)
    asker.locator(ANSWER).first.wait_for()
    other.goto(f"{stack.url}/#chat={chat}")

    # The second page gets the tokens from the moment it connected.
    other.wait_for_function(
        """() => {
            const node = [...document.querySelectorAll('[data-role="assistant"]')].pop();
            return node && node.dataset.status === 'streaming'
                && /t\\d+ t\\d+/.test(node.textContent);
        }"""
    )
    assert other.get_by_test_id("stop").is_enabled()
    other.get_by_test_id("stop").click()

    for page in (asker, other):
        page.wait_for_selector(f'{ANSWER}[data-status="cancelled"]')
    other.wait_for_selector('[data-testid="message"][data-role="user"]:has-text("Seen twice")')
    shown = [page.locator(ANSWER).last.locator(".body").inner_text() for page in (asker, other)]
    assert shown[0] == shown[1]
    assert shown[0].startswith("t0 t1 ")
    assert stored(stack, chat)[-1]["status"] == "cancelled"
