"""Chats end to end: the real app on Hypercorn, a fake LLM on loopback, real clients."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from autobot import Settings
from autobot.api import create_app
from tests.support.fake_llm import FakeLLM, Scenario
from tests.support.polling import eventually
from tests.support.serving import served


@asynccontextmanager
async def chat_server(
    settings: Settings, fake: FakeLLM, *, provider: str = "ollama", **deadlines: float
) -> AsyncIterator[httpx.AsyncClient]:
    settings = dataclasses.replace(
        settings,
        llm_provider=provider,
        llm_url=fake.url(provider),
        deadlines={name.replace("_", "."): s for name, s in deadlines.items()},
    )
    async with served(create_app(settings)) as client:
        yield client


async def new_chat(client: httpx.AsyncClient, title: str = "t") -> str:
    response = await client.post("/api/chats", json={"title": title})
    assert response.status_code == 201
    return response.json()["chat"]["id"]


async def messages_of(client: httpx.AsyncClient, chat_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200
    return response.json()["messages"]


async def answer_stored(client: httpx.AsyncClient, chat_id: str) -> list[dict[str, Any]] | None:
    """The chat's messages once the last one is the assistant's, else None."""
    messages = await messages_of(client, chat_id)
    return messages if messages and messages[-1]["role"] == "assistant" else None


def parse_sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


# -- chats CRUD ------------------------------------------------------------------------------


async def test_chat_crud(settings: Settings, fake_llm: FakeLLM) -> None:
    async with chat_server(settings, fake_llm) as client:
        first = await new_chat(client, "first")
        second = await new_chat(client, "second")
        listed = (await client.get("/api/chats")).json()["chats"]
        assert [chat["id"] for chat in listed] == [second, first]
        assert set(listed[0]) == {"id", "title", "created_at", "updated_at", "message_count"}

        detail = (await client.get(f"/api/chats/{first}")).json()
        assert detail["chat"]["title"] == "first"
        assert detail["messages"] == []

        assert (await client.delete(f"/api/chats/{first}")).status_code == 204
        for response in (
            await client.get(f"/api/chats/{first}"),
            await client.delete(f"/api/chats/{first}"),
            await client.post(f"/api/chats/{first}/messages", json={"content": "hi"}),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "chat_not_found"

        untitled = await client.post("/api/chats")  # no body at all: an empty object
        assert untitled.json()["chat"]["title"] == "New chat"
        assert (await client.get("/api/chats?limit=1")).json()["chats"][0]["id"] == (
            untitled.json()["chat"]["id"]
        )


# -- answers over HTTP -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_non_streaming_answer_is_stored(
    settings: Settings, fake_llm: FakeLLM, provider: str
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Trio ", "is ", "structured."]))
    async with chat_server(settings, fake_llm, provider=provider) as client:
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages", json={"content": "What is Trio?"}
        )
        assert response.status_code == 200
        message = response.json()["message"]
        assert (message["role"], message["content"], message["status"]) == (
            "assistant",
            "Trio is structured.",
            "complete",
        )
        stored = await messages_of(client, chat_id)
        assert [(m["role"], m["content"], m["status"]) for m in stored] == [
            ("user", "What is Trio?", "complete"),
            ("assistant", "Trio is structured.", "complete"),
        ]
    sent = fake_llm.requests[-1].json()
    assert sent["messages"][-1] == {"role": "user", "content": "What is Trio?"}


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_streamed_answer_as_server_sent_events(
    settings: Settings, fake_llm: FakeLLM, provider: str
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Hel", "lo", ", ", "world"]))
    async with chat_server(settings, fake_llm, provider=provider) as client:
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages", json={"content": "greet", "stream": True}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        # Tokens that arrive together may share an event; their text is the answer.
        assert {name for name, _ in events[:-1]} == {"token"}
        assert "".join(data["delta"] for _, data in events[:-1]) == "Hello, world"
        name, data = events[-1]
        assert name == "done"
        assert data["message"]["content"] == "Hello, world"
        assert data["message"]["status"] == "complete"
        assert (await messages_of(client, chat_id))[-1] == data["message"]


async def test_history_goes_to_the_llm(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["ok"]))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        await client.post(f"/api/chats/{chat_id}/messages", json={"content": "one"})
        await client.post(f"/api/chats/{chat_id}/messages", json={"content": "two"})
    assert fake_llm.requests[-1].json()["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "two"},
    ]


async def test_system_prompt_template_is_used(settings: Settings, fake_llm: FakeLLM) -> None:
    prompts = settings.data_dir / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "system.md").write_text("You are AutoBot.")
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        await client.post(f"/api/chats/{chat_id}/messages", json={"content": "hi"})
    assert fake_llm.requests[-1].json()["messages"][0] == {
        "role": "system",
        "content": "You are AutoBot.",
    }


async def test_stalled_stream_is_llm_timeout_from_llm_idle(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=6, stall_after=2))
    async with chat_server(settings, fake_llm, llm_idle=0.3) as client:
        chat_id = await new_chat(client)
        started = trio.current_time()
        response = await client.post(
            f"/api/chats/{chat_id}/messages", json={"content": "x", "stream": True}
        )
        assert trio.current_time() - started < 2
        events = parse_sse(response.text)
        assert {name for name, _ in events[:-1]} == {"token"}
        assert "".join(data["delta"] for _, data in events[:-1]) == "t0 t1 "
        assert events[-1][0] == "error"
        error = events[-1][1]["error"]
        assert (error["code"], error["scope"], error["deadline_s"]) == (
            "llm_timeout",
            "llm.idle",
            0.3,
        )
        stored = (await messages_of(client, chat_id))[-1]
        assert (stored["content"], stored["status"]) == ("t0 t1 ", "failed")


async def test_provider_down_is_503_fast_and_opens_the_breaker(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        for _ in range(6):
            started = trio.current_time()
            response = await client.post(f"/api/chats/{chat_id}/messages", json={"content": "x"})
            assert trio.current_time() - started < 1
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "llm_unavailable"
        health = (await client.get("/api/health")).json()
        assert health["status"] == "degraded"
        assert health["checks"]["llm"]["ok"] is False
        assert "circuit" in health["checks"]["llm"]["error"]
        stored = await messages_of(client, chat_id)
        assert [(m["role"], m["status"]) for m in stored[-2:]] == [
            ("user", "complete"),
            ("assistant", "failed"),
        ]


@pytest.mark.parametrize(
    ("scenario", "partial"),
    [
        (Scenario(tokens=5, malformed_after=2), "t0 t1 "),
        (Scenario(tokens=5, error_after=3), "t0 t1 t2 "),
        (Scenario(tokens=5, truncate_after=4), "t0 t1 t2 t3 "),
    ],
)
async def test_broken_stream_is_502_with_the_partial_answer_stored(
    settings: Settings, fake_llm: FakeLLM, scenario: Scenario, partial: str
) -> None:
    await fake_llm.set_scenario(scenario)
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        response = await client.post(f"/api/chats/{chat_id}/messages", json={"content": "x"})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "llm_error"
        stored = (await messages_of(client, chat_id))[-1]
        assert (stored["role"], stored["content"], stored["status"]) == (
            "assistant",
            partial,
            "failed",
        )


async def test_client_disconnect_closes_the_provider_request_and_keeps_the_partial(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=1000, token_delay=0.01))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        received = 0
        async with client.stream(
            "POST", f"/api/chats/{chat_id}/messages", json={"content": "long", "stream": True}
        ) as response:
            async for chunk in response.aiter_text():
                received += chunk.count("event: token")
                if received >= 3:
                    break
        # Leaving the block closed our connection mid-stream.
        record = fake_llm.streams[-1]
        with trio.fail_after(5):
            await record.client_closed.wait()
        assert record.tokens_sent < 1000
        with trio.fail_after(5):
            stored = await eventually(lambda: answer_stored(client, chat_id))
        assert stored[-1]["status"] == "cancelled"
        assert stored[-1]["content"].startswith("t0 t1 t2 ")
        # The chat is free for the next answer.
        await fake_llm.set_scenario(Scenario(tokens=["again"]))
        response = await client.post(f"/api/chats/{chat_id}/messages", json={"content": "x"})
        assert response.json()["message"]["content"] == "again"


async def test_second_message_while_streaming_is_409(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=50, token_delay=0.02))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with client.stream(
            "POST", f"/api/chats/{chat_id}/messages", json={"content": "a", "stream": True}
        ) as response:
            async for chunk in response.aiter_text():
                if "event: token" in chunk:
                    break
            second = await client.post(f"/api/chats/{chat_id}/messages", json={"content": "b"})
            assert second.status_code == 409
            assert second.json()["error"]["code"] == "answer_in_progress"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": ""}, 422, "validation_error"),
        ({"content": "x" * 32_001}, 422, "validation_error"),
        ({"stream": True}, 422, "validation_error"),
        ({"content": "x", "model": ""}, 422, "validation_error"),
        ({"content": " \n\t "}, 422, "validation_error"),
        ({"content": "x", "stream": "true"}, 422, "validation_error"),
        ({"content": "x", "stream": 1}, 422, "validation_error"),
        (b"{oops", 400, "invalid_json"),
        (b'{"content": "caf\xe9"}', 400, "invalid_json"),  # Latin-1, not UTF-8
        (b'{"content": "x", "n": NaN}', 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "json_too_deep"),
        (b'{"content": "x", "m": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "json_too_deep"),
    ],
)
async def test_bad_message_input(
    settings: Settings, fake_llm: FakeLLM, body: Any, status: int, code: str
) -> None:
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = await client.post(
            f"/api/chats/{chat_id}/messages",
            headers={"content-type": "application/json"},
            **kwargs,
        )
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == code
        if status == 422:
            assert error["fields"] and all(item["message"] for item in error["fields"])
        assert await messages_of(client, chat_id) == []


# -- legacy routes ---------------------------------------------------------------------------------


async def test_legacy_routes(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["legacy ", "answer"]))
    async with chat_server(settings, fake_llm) as client:
        response = await client.post("/api/send_message", json={"message": "hello there"})
        assert response.status_code == 200
        body = response.json()
        chat_id = body["chat_id"]
        assert body["message"]["content"] == "legacy answer"

        again = await client.post("/api/send_message", json={"message": "more", "chat_id": chat_id})
        assert again.json()["chat_id"] == chat_id

        for route in ("/api/list_sessions", "/api/chat_sessions"):
            sessions = (await client.get(route)).json()["chats"]
            assert [s["id"] for s in sessions] == [chat_id]
            assert sessions[0]["message_count"] == 4

        history = (await client.get(f"/api/history?chat_id={chat_id}")).json()
        assert [m["content"] for m in history["messages"]] == [
            "hello there",
            "legacy answer",
            "more",
            "legacy answer",
        ]
        assert (await client.get("/api/history")).status_code == 422
        missing = await client.post("/api/send_message", json={"message": "x", "chat_id": "nope"})
        assert missing.json()["error"]["code"] == "chat_not_found"
        assert (await client.delete(f"/api/delete_session?chat_id={chat_id}")).status_code == 204
        assert (await client.get("/api/chat_sessions")).json()["chats"] == []


async def test_answers_show_in_the_metrics(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["one ", "two"]))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        await client.post(f"/api/chats/{chat_id}/messages", json={"content": "count"})
        text = (await client.get("/api/metrics")).text
    assert 'autobot_chat_answers_total{status="complete"} 1.0' in text
    assert "autobot_chat_answer_characters_total 7.0" in text
    assert 'autobot_llm_tokens_total{kind="completion"} 2.0' in text
    target = f"ollama {fake_llm.ollama_url}"
    assert f'autobot_breaker_open{{dependency="llm",target="{target}"}} 0.0' in text
    assert 'autobot_deadline_observations_total{scope="llm.first_token"} 1.0' in text


async def test_fallback_provider_answers_when_the_primary_is_down(
    settings: Settings, nursery: trio.Nursery
) -> None:
    from autobot.llm import parse_fallback
    from tests.support.fake_llm import serve_fake_llm

    primary = await nursery.start(serve_fake_llm, Scenario(refuse_connections=True))
    backup = await nursery.start(serve_fake_llm, Scenario(tokens=["from ", "the backup"]))
    settings = dataclasses.replace(
        settings,
        llm_url=primary.ollama_url,
        llm_fallback=parse_fallback(f"openai:{backup.openai_url}:qwen2"),
    )
    async with served(create_app(settings)) as client:
        chat_id = await new_chat(client)
        response = await client.post(f"/api/chats/{chat_id}/messages", json={"content": "hi"})
    assert response.status_code == 200
    assert response.json()["message"]["content"] == "from the backup"
    assert backup.requests[-1].json()["model"] == "qwen2"
