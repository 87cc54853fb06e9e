"""The chat WebSocket: shared streams, cancel, bad input, several processes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from autobot import Settings
from tests.api.test_chats import answer_stored, chat_server, messages_of, new_chat
from tests.support.fake_llm import FakeLLM, Scenario
from tests.support.polling import eventually
from tests.support.process import run_server
from tests.support.redis_server import RedisProcesses


def ws_url(client: httpx.AsyncClient, chat_id: str) -> str:
    return str(client.base_url).replace("http://", "ws://") + f"/api/chats/{chat_id}/ws"


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())


async def receive_until_final(ws: trio_websocket.WebSocketConnection) -> list[dict[str, Any]]:
    events = []
    while True:
        event = await receive(ws)
        events.append(event)
        if event["type"] in ("done", "cancelled", "error"):
            return events


async def test_message_streams_tokens_then_done(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["a", "b", "c"]))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "abc?"}))
            events = await receive_until_final(ws)
        assert {event["type"] for event in events[:-1]} == {"token"}
        assert "".join(event["delta"] for event in events[:-1]) == "abc"
        assert events[-1]["type"] == "done"
        assert events[-1]["message"]["content"] == "abc"
        stored = await messages_of(client, chat_id)
        assert [(m["role"], m["content"]) for m in stored] == [
            ("user", "abc?"),
            ("assistant", "abc"),
        ]


async def test_two_clients_on_one_chat_both_receive_every_token(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=30))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        url = ws_url(client, chat_id)
        async with (
            trio_websocket.open_websocket_url(url) as asker,
            trio_websocket.open_websocket_url(url) as watcher,
        ):
            await asker.send_message(json.dumps({"type": "message", "content": "go"}))
            asked = await receive_until_final(asker)
            watched = await receive_until_final(watcher)
        assert asked == watched
        assert (
            "".join(e["delta"] for e in asked if e["type"] == "token") == Scenario(tokens=30).text
        )


async def test_cancel_stops_the_answer_for_everyone(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=1000, token_delay=0.01))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        url = ws_url(client, chat_id)
        async with (
            trio_websocket.open_websocket_url(url) as asker,
            trio_websocket.open_websocket_url(url) as canceller,
        ):
            await asker.send_message(json.dumps({"type": "message", "content": "long"}))
            assert (await receive(canceller))["type"] == "token"
            await canceller.send_message(json.dumps({"type": "cancel"}))
            for ws in (asker, canceller):
                final = (await receive_until_final(ws))[-1]
                assert final["type"] == "cancelled"
                assert final["message"]["status"] == "cancelled"
        with trio.fail_after(5):
            await fake_llm.streams[-1].client_closed.wait()
        stored = (await messages_of(client, chat_id))[-1]
        assert stored["status"] == "cancelled"
        assert stored["content"] == final["message"]["content"]
        assert 0 < len(stored["content"]) < len(Scenario(tokens=1000).text)


async def test_asker_going_away_cancels_its_answer(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=1000, token_delay=0.01))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "long"}))
            assert (await receive(ws))["type"] == "token"
        with trio.fail_after(5):
            await fake_llm.streams[-1].client_closed.wait()
        with trio.fail_after(5):
            stored = await eventually(lambda: answer_stored(client, chat_id))
        assert stored[-1]["status"] == "cancelled"


async def test_bad_messages_get_error_events_and_the_socket_stays_open(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["fine"]))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            for raw, code in [
                ("{nope", "invalid_json"),
                ("[1, 2]", "invalid_message"),
                (json.dumps({"type": "shout"}), "unknown_message_type"),
                (json.dumps({"type": "message", "content": ""}), "validation_error"),
                (json.dumps({"type": "message", "content": "x" * 32_001}), "content_too_long"),
            ]:
                await ws.send_message(raw)
                event = await receive(ws)
                assert event["type"] == "error"
                assert event["error"]["code"] == code
            await ws.send_message(json.dumps({"type": "message", "content": "still there?"}))
            assert (await receive_until_final(ws))[-1]["message"]["content"] == "fine"


async def test_message_while_an_answer_streams_is_an_error_event(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=200, token_delay=0.01))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "first"}))
            assert (await receive(ws))["type"] == "token"
            await ws.send_message(json.dumps({"type": "message", "content": "second"}))
            while (event := await receive(ws))["type"] == "token":
                pass
            assert event["type"] == "error"
            assert event["error"]["code"] == "answer_in_progress"


async def test_unknown_chat_refuses_the_handshake(settings: Settings, fake_llm: FakeLLM) -> None:
    async with chat_server(settings, fake_llm) as client:
        with pytest.raises(trio_websocket.ConnectionRejected) as caught:
            async with trio_websocket.open_websocket_url(ws_url(client, "nope")):
                pass
    assert caught.value.status_code == 404
    assert json.loads(caught.value.body)["error"]["code"] == "chat_not_found"


async def test_llm_failure_reaches_websocket_clients(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, error_after=2))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "x"}))
            events = await receive_until_final(ws)
        assert {e["type"] for e in events[:-1]} == {"token"}
        assert "".join(e["delta"] for e in events[:-1]) == "t0 t1 "
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["code"] == "llm_error"
        assert events[-1]["message"]["status"] == "failed"


async def test_two_processes_on_one_redis_share_the_stream(tmp_path, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=20, token_delay=0.005))
    processes = RedisProcesses(tmp_path / "redis")
    redis = processes.redis()
    try:
        common = {"AUTOBOT_REDIS_URL": redis.url, "AUTOBOT_LLM_URL": fake_llm.ollama_url}
        async with (
            run_server({**common, "AUTOBOT_DATA_DIR": str(tmp_path / "a")}) as first,
            run_server({**common, "AUTOBOT_DATA_DIR": str(tmp_path / "b")}) as second,
            httpx.AsyncClient(base_url=first.url) as on_first,
            httpx.AsyncClient(base_url=second.url) as on_second,
        ):
            chat_id = await new_chat(on_first)
            # The chat made on one process is there on the other.
            assert (await on_second.get(f"/api/chats/{chat_id}")).status_code == 200
            async with trio_websocket.open_websocket_url(ws_url(on_first, chat_id)) as ws:
                response = await on_second.post(
                    f"/api/chats/{chat_id}/messages", json={"content": "from the other side"}
                )
                assert response.status_code == 200
                events = await receive_until_final(ws)
            assert "".join(e["delta"] for e in events if e["type"] == "token") == (
                Scenario(tokens=20).text
            )
            assert events[-1]["type"] == "done"
            assert events[-1]["message"] == response.json()["message"]
    finally:
        processes.stop_all()
