"""The kit's fixtures and helpers: what each starts, what it is configured by, how it stops."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from autobot import DeadlineExceeded, UnknownDeadlineScope, current_deadlines, deadline
from autobot.testing import (
    AutoBotServer,
    FakeLLM,
    RedisProcess,
    Scenario,
    app_settings,
    eventually,
    override_deadlines,
    parse_events,
    settings_environ,
)


def test_redis_server_freezes_resumes_and_dies(redis_server: RedisProcess) -> None:
    assert redis_server.command("PING") == "PONG"
    assert redis_server.url.startswith("redis://127.0.0.1:")
    redis_server.freeze()
    with pytest.raises(OSError):  # connected, but nothing answers
        redis_server.command("PING", budget_s=0.2)
    redis_server.resume()
    assert redis_server.command("PING") == "PONG"
    redis_server.kill()
    assert not redis_server.running
    with pytest.raises(OSError):
        redis_server.command("PING", budget_s=0.2)


async def test_autobot_client_streams_an_answer_from_the_fake(
    autobot_client, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Hel", "lo"]))
    client = await autobot_client(llm=fake_llm)
    assert (await client.get("/api/health")).status_code == 200
    chat_id = await client.new_chat()
    events = await client.ask(chat_id, "hi", model="qwen2")
    assert events[-1].event == "done"
    assert "".join(e.data["delta"] for e in events if e.event == "token") == "Hello"
    assert events[-1].data["message"]["status"] == "complete"
    assert fake_llm.chat_requests[-1].model == "qwen2"
    assert fake_llm.chat_requests[-1].messages[-1] == {"role": "user", "content": "hi"}
    messages = await client.messages(chat_id)
    assert [m["role"] for m in messages] == ["user", "assistant"]


async def test_autobot_client_sends_the_apps_token_over_http_and_websocket(
    autobot_client, fake_llm: FakeLLM
) -> None:
    client = await autobot_client(llm=fake_llm, api_token="s3cret")
    chat_id = await client.new_chat()
    async with httpx.AsyncClient(base_url=client.url) as stranger:
        assert (await stranger.get("/api/chats")).status_code == 401
    async with client.websocket(f"/api/chats/{chat_id}/ws") as ws:
        await ws.send_message(json.dumps({"type": "message", "content": "hi"}))
        kinds = []
        with trio.fail_after(5):
            while not kinds or kinds[-1] != "done":
                kinds.append(json.loads(await ws.get_message())["type"])
    assert kinds[-1] == "done" and "token" in kinds


async def test_autobot_app_is_configured_by_keywords(autobot_app, autobot_client) -> None:
    app = autobot_app(deadlines={"http.request": 0.5}, max_upload_bytes=10)
    settings = app.extensions["autobot.services"].settings
    assert settings.max_upload_bytes == 10 and settings.deadlines == {"http.request": 0.5}
    client = await autobot_client(app)
    assert (
        await client.put("/api/files/content", params={"path": "a.txt"}, content=b"x" * 100)
    ).status_code == 413
    with pytest.raises(TypeError, match="not a setting: nonsense"):
        autobot_app(nonsense=1)
    with pytest.raises(TypeError):
        await autobot_client(app, api_token="x")


def test_app_settings_point_at_the_fake_in_its_format(tmp_path: Path) -> None:
    class Fake:
        def url(self, kind: str) -> str:
            return f"http://fake/{kind}"

    settings = app_settings(tmp_path, llm=Fake(), llm_provider="openai")  # type: ignore[arg-type]
    assert settings.llm_url == "http://fake/openai" and settings.data_dir == tmp_path
    refused = app_settings(tmp_path).llm_url
    port = int(refused.rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


def test_settings_environ() -> None:
    environ = settings_environ(
        api_token="t",
        crawl_allow_private=True,
        allowed_hosts=("a", "b"),
        deadlines={"llm.idle": 0.5},
        embed_model=None,
    )
    assert environ == {
        "AUTOBOT_API_TOKEN": "t",
        "AUTOBOT_CRAWL_ALLOW_PRIVATE": "1",
        "AUTOBOT_ALLOWED_HOSTS": "a,b",
        "AUTOBOT_DEADLINE_LLM_IDLE": "0.5",
    }
    with pytest.raises(TypeError):
        settings_environ(deadlines={"no.such": 1})


def test_parse_events() -> None:
    text = 'event: token\ndata: {"delta":"a"}\n\n: keepalive\n\nevent: done\ndata: {}\n\n'
    assert [(e.event, e.data) for e in parse_events(text)] == [
        ("token", {"delta": "a"}),
        ("done", {}),
    ]


async def test_override_deadlines_for_a_block() -> None:
    default = current_deadlines().budget("llm.idle")
    with override_deadlines({"llm.idle": 0.05}) as table:
        assert current_deadlines() is table
        assert table.budget("llm.idle") == 0.05
        assert table.budget("llm.total") == 600.0
        with override_deadlines({"llm.total": 1.0}):
            assert current_deadlines().budget("llm.idle") == 0.05  # the enclosing one's
        with pytest.raises(DeadlineExceeded, match=r"llm\.idle"):
            with deadline("llm.idle"):
                await trio.sleep(1)
    assert current_deadlines().budget("llm.idle") == default
    with pytest.raises(UnknownDeadlineScope):
        with override_deadlines({"llm.nothing": 1}):
            pass


def test_override_deadlines_under_a_mock_clock() -> None:
    async def main() -> float:
        start = trio.current_time()
        with override_deadlines({"operation.lease": 5.0}):
            with pytest.raises(DeadlineExceeded):
                with deadline("operation.lease"):
                    await trio.sleep_forever()
        return trio.current_time() - start

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 5.0


async def test_eventually_takes_plain_and_async_checks() -> None:
    calls = []

    def plain() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    async def awaited() -> str:
        await trio.lowlevel.checkpoint()
        return "yes"

    with trio.fail_after(2):
        assert await eventually(plain, interval_s=0.001) == 3
        assert await eventually(awaited) == "yes"


@pytest.mark.slow
async def test_autobot_server_stops_on_sigterm_and_restarts_on_its_data(
    autobot_server, fake_llm: FakeLLM
) -> None:
    server: AutoBotServer = await autobot_server(llm=fake_llm, api_token="t")
    headers = {"Authorization": "Bearer t"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        created = await client.post("/api/chats", json={"title": "kept"})
        assert created.status_code == 201
    assert await server.stop() == 0
    assert any(entry.get("msg") == "shutting down" for entry in server.log)

    again: AutoBotServer = await autobot_server(data_dir=server.data_dir, llm=fake_llm)
    async with httpx.AsyncClient(base_url=again.url) as client:
        chats = (await client.get("/api/chats")).json()["chats"]
    assert [chat["title"] for chat in chats] == ["kept"]
    assert await again.kill() == -signal.SIGKILL
