"""``autobot chat`` in a pseudo-terminal: streaming, Ctrl-C cancels the answer, Ctrl-D leaves."""

from __future__ import annotations

import pathlib
import re

import httpx
import pytest
import trio

from tests.support.fake_llm import FakeLLM, Scenario, serve_fake_llm
from tests.support.polling import eventually

from .helpers import cli, server_for, terminal

HINT = "Ctrl-C stops an answer; Ctrl-D, or Ctrl-C at the prompt, leaves."
# A slow answer: Ctrl-C lands while it streams.
SLOW = Scenario(tokens=400, token_delay=0.02)


async def stored_messages(url: str, chat_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get(f"/api/chats/{chat_id}")).json()["messages"]


@pytest.mark.slow
async def test_stream_cancel_with_ctrl_c_error_lines_and_ctrl_d(
    tmp_path: pathlib.Path, nursery: trio.Nursery
) -> None:
    fake: FakeLLM = await nursery.start(serve_fake_llm, SLOW)
    data = tmp_path / "data"
    async with server_for(data, fake, AUTOBOT_DEADLINE_LLM_FIRST_TOKEN="0.5") as server:
        async with terminal("--url", server.url, "chat") as term:
            header = await term.expect(re.escape(HINT))
            chat_id = re.search(r"chat ([0-9a-f]+) \(new\)", header).group(1)
            await term.expect("you> ")

            await term.sendline("tell me a long story")
            streamed = await term.expect("t5 ")  # tokens show as they arrive
            assert "bot> t0 t1 t2 t3 t4" in streamed
            await term.ctrl_c()
            await term.expect(r"\[cancelled\]")
            await term.expect("you> ")  # still running, back at the prompt

            await fake.set_scenario(Scenario(tokens=["Hello", ", ", "world", "!"]))
            await term.sendline("say hello")
            await term.expect("bot> Hello, world!")
            await term.expect("you> ")

            await fake.set_scenario(Scenario(first_token_delay=3))
            await term.sendline("this one is slow to start")
            timeout = await term.expect("you> ")
            assert "error: llm_timeout:" in timeout
            assert "(deadline llm.first_token, 0.5 s)" in timeout

            await fake.set_scenario(Scenario(refuse_connections=True))
            await term.sendline("is anyone there?")
            unavailable = await term.expect("you> ")
            assert "error: llm_unavailable:" in unavailable

            await term.ctrl_d()
            assert await term.exit_status() == 0

        messages = await stored_messages(server.url, chat_id)
        answers = [m for m in messages if m["role"] == "assistant"]
        assert answers[0]["status"] == "cancelled"
        assert answers[0]["content"].startswith("t0 t1 t2 t3 t4 t5 ")
        assert len(answers[0]["content"]) < len(SLOW.text)
        assert (answers[1]["status"], answers[1]["content"]) == ("complete", "Hello, world!")
        assert [a["status"] for a in answers[2:]] == ["failed", "failed"]


@pytest.mark.slow
async def test_history_and_leaving_with_ctrl_c(
    tmp_path: pathlib.Path, nursery: trio.Nursery
) -> None:
    fake: FakeLLM = await nursery.start(serve_fake_llm, Scenario(tokens=["first ", "answer"]))
    async with server_for(tmp_path / "data", fake) as server:
        piped = await cli("--url", server.url, "chat", stdin=b"hello there\n")
        assert piped.returncode == 0, piped.stderr
        chat_id = re.match(r"chat ([0-9a-f]+) \(new\)", piped.lines[0]).group(1)
        assert "you> bot> first answer" in piped.stdout  # no terminal: no echo of the line

        async with terminal("--url", server.url, "chat", chat_id) as term:
            history = await term.expect(re.escape(HINT))
            assert f"chat {chat_id}" in history
            assert "you> hello there" in history
            assert "bot> first answer" in history
            await term.expect("you> ")
            await term.ctrl_c()
            assert await term.exit_status() == 0

        await fake.set_scenario(SLOW)
        async with terminal("--url", server.url, "chat", chat_id) as term:
            await term.expect(re.escape(HINT))
            await term.expect("you> ")
            await term.sendline("go on")
            await term.expect("t3 ")
            await term.ctrl_c()
            await term.expect(r"\[cancelled\]")
            await term.ctrl_c()  # the second Ctrl-C leaves
            assert await term.exit_status() == 0

        async def answer_ended() -> list[dict] | None:
            messages = await stored_messages(server.url, chat_id)
            return messages if len(messages) == 4 else None

        with trio.fail_after(5):
            messages = await eventually(answer_ended)
        assert messages[-1]["status"] == "cancelled"
