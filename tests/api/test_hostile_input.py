"""Input a hostile or broken client sends: always a 4xx in the contract's shape, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio_websocket

from autobot import Settings
from tests.api.test_chat_websocket import receive, receive_until_final, ws_url
from tests.api.test_chats import chat_server, new_chat
from tests.support.fake_llm import FakeLLM, Scenario
from tests.support.polling import eventually


@pytest.mark.parametrize(
    "query",
    [
        "limit=1_0",
        "limit=%205",
        "limit=+5",
        "limit=5.0",
        "limit=",
        "offset=-1",
        "offset=9223372036854775807",
        "offset=99999999999999999999999",
        "limit=0",
        "limit=1001",
    ],
)
async def test_numeric_query_parameters_are_plain_digits_in_range(
    settings: Settings, fake_llm: FakeLLM, query: str
) -> None:
    async with chat_server(settings, fake_llm) as client:
        response = await client.get(f"/api/chats?{query}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"][0]["field"] in ("limit", "offset")


async def test_an_offset_past_the_end_is_an_empty_page(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with chat_server(settings, fake_llm) as client:
        await new_chat(client)
        response = await client.get("/api/chats?offset=1000000000&limit=1000")
    assert response.status_code == 200
    assert response.json() == {"chats": []}


async def test_long_ids_are_not_echoed_whole(settings: Settings, fake_llm: FakeLLM) -> None:
    long_id = "x" * 8000
    async with chat_server(settings, fake_llm) as client:
        responses = [
            await client.get(f"/api/chats/{long_id}"),
            await client.delete(f"/api/chats/{long_id}"),
            await client.get(f"/api/history?chat_id={long_id}"),
        ]
    for response in responses:
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "chat_not_found"
        assert len(error["message"]) < 200
        assert "8002 characters" in error["message"]


async def test_websocket_frames_that_are_not_json_keep_the_socket_open(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["ok"]))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            for frame, code in (
                ("[" * 100_000 + "]" * 100_000, "json_too_deep"),
                (b"\xff\xfe not utf-8", "invalid_json"),
                ("{oops", "invalid_json"),
                ('{"type": "message", "content": "   "}', "validation_error"),
                ('{"type": "' + "y" * 5000 + '"}', "unknown_message_type"),
            ):
                await ws.send_message(frame)
                event = await receive(ws)
                assert event["type"] == "error"
                assert event["error"]["code"] == code
                assert len(event["error"]["message"]) < 300
            # Still open, and still answering.
            await ws.send_message(json.dumps({"type": "message", "content": "hi"}))
            events = await receive_until_final(ws)
    assert events[-1]["type"] == "done"


async def _stalled_body(client: httpx.AsyncClient, path: str) -> dict:
    """Send headers promising a body, then only part of it; return the parsed answer."""
    host, port = client.base_url.host, client.base_url.port
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            '{"content": "'.encode()
        )
        received = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                chunk = await stream.receive_some()
                if not chunk:
                    break
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return {"status": status, **json.loads(body)}


async def test_a_stalled_body_is_408_naming_http_body_on_every_route(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with chat_server(settings, fake_llm, http_body=0.2, http_request=5) as client:
        chat_id = await new_chat(client)
        for path in ("/api/chats", f"/api/chats/{chat_id}/messages", "/api/send_message"):
            answer = await _stalled_body(client, path)
            assert answer["status"] == 408, path
            error = answer["error"]
            assert error["code"] == "request_timeout"
            assert error["scope"] == "http.body"
            assert error["deadline_s"] == 0.2


async def test_deleting_a_chat_mid_answer_stops_the_llm_and_tells_listeners(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=200, token_delay=0.02))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "long one"}))
            first = await receive(ws)
            assert first["type"] == "token"
            assert (await client.delete(f"/api/chats/{chat_id}")).status_code == 204
            events = await receive_until_final(ws)
            with trio.fail_after(2):
                await fake_llm.streams[-1].client_closed.wait()
            # Nothing follows the one error event, on the socket that asked either.
            with trio.move_on_after(0.3):
                events.append(json.loads(await ws.get_message()))
        final = events[-1]
        assert final["type"] == "error"
        assert final["error"]["code"] == "chat_deleted"
        assert [event for event in events if event["type"] == "error"] == [final]
        assert fake_llm.streams[-1].tokens_sent < 200
        assert (await client.get(f"/api/chats/{chat_id}")).status_code == 404
        # The chat is free again for nobody: a new chat answers normally.
        again = await new_chat(client)
        await fake_llm.set_scenario(Scenario(tokens=["fine"]))
        response = await client.post(f"/api/chats/{again}/messages", json={"content": "hi"})
        assert response.json()["message"]["content"] == "fine"


async def test_deleting_a_chat_streamed_over_sse_ends_with_one_error_event(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=200, token_delay=0.02))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        events: list[str] = []
        async with client.stream(
            "POST", f"/api/chats/{chat_id}/messages", json={"content": "long", "stream": True}
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                    if events == ["token"]:
                        assert (await client.delete(f"/api/chats/{chat_id}")).status_code == 204
                elif line.startswith("data: ") and events[-1] == "error":
                    assert (
                        json.loads(line.removeprefix("data: "))["error"]["code"] == "chat_deleted"
                    )
    assert events.count("error") == 1
    assert events[-1] == "error"
    assert fake_llm.streams[-1].client_closed.is_set()


async def test_deleting_a_chat_answered_over_http_ends_that_request_with_chat_deleted(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=200, token_delay=0.02))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio.open_nursery() as nursery:
            outcome: dict = {}

            async def ask() -> None:
                response = await client.post(
                    f"/api/chats/{chat_id}/messages", json={"content": "long"}
                )
                outcome.update(status=response.status_code, body=response.json())

            nursery.start_soon(ask)

            async def streaming() -> bool:
                await trio.lowlevel.checkpoint()
                return bool(fake_llm.streams) and fake_llm.streams[-1].tokens_sent >= 2

            with trio.fail_after(5):
                await eventually(streaming, interval_s=0.01)
            assert (await client.delete(f"/api/chats/{chat_id}")).status_code == 204
    assert outcome["status"] == 409
    assert outcome["body"]["error"]["code"] == "chat_deleted"
    assert fake_llm.streams[-1].client_closed.is_set()
