"""Joining an answer in progress: snapshot then every later token once, SSE resume, detach."""

from __future__ import annotations

import json

import httpx
import trio
import trio_websocket

from autobot import Settings
from tests.api.test_chat_websocket import receive, receive_until_final, ws_url
from tests.api.test_chats import answer_stored, chat_server, messages_of, new_chat, parse_sse
from tests.support.fake_llm import FakeLLM, Scenario
from tests.support.polling import eventually


async def start(client: httpx.AsyncClient, chat_id: str, **more: object) -> None:
    async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
        await ws.send_message(json.dumps({"type": "message", "content": "go", **more}))
        await receive(ws)  # the first token: the answer runs


async def test_a_joiner_gets_the_snapshot_then_every_later_token_once(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=400, token_delay=0.001))
    async with chat_server(settings, fake_llm) as client:
        for _ in range(5):
            chat_id = await new_chat(client)
            async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as asker:
                await asker.send_message(json.dumps({"type": "message", "content": "go"}))
                await receive(asker)
                async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as joiner:
                    snapshot = await receive(joiner)
                    assert snapshot["type"] == "snapshot"
                    assert snapshot["message"]["status"] == "streaming"
                    events = await receive_until_final(joiner)
                await receive_until_final(asker)
            seqs = [event["seq"] for event in events if event["type"] == "token"]
            assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(seqs)))
            text = snapshot["message"]["content"] + "".join(
                event["delta"] for event in events if event["type"] == "token"
            )
            stored = (await messages_of(client, chat_id))[-1]
            assert (text, stored["status"]) == (stored["content"], "complete")
            assert events[-1]["message"] == stored
            assert snapshot["message"]["id"] == stored["id"]  # one id from snapshot to history


async def test_sse_attach_resumes_after_last_event_id_and_is_204_when_idle(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=200, token_delay=0.002))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        assert (await client.get(f"/api/chats/{chat_id}/stream")).status_code == 204
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as asker:
            await asker.send_message(json.dumps({"type": "message", "content": "go"}))
            await receive(asker)
            # A first attach, cut after a few events.
            seen: list[str] = []
            async with client.stream("GET", f"/api/chats/{chat_id}/stream") as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        seen.append(line[4:])
                    if len(seen) == 5:
                        break
            answer_id, last = seen[-1].rsplit(":", 1)
            response = await client.get(
                f"/api/chats/{chat_id}/stream", headers={"Last-Event-ID": seen[-1]}
            )
            await receive_until_final(asker)
        events = parse_sse(response.text)
        tokens = [data for name, data in events if name == "token"]
        assert tokens[0]["seq"] == int(last) + 1
        assert [t["seq"] for t in tokens] == list(range(int(last) + 1, int(last) + 1 + len(tokens)))
        assert events[-1][0] == "done"
        assert events[-1][1]["message"]["content"].endswith("".join(t["delta"] for t in tokens))
        assert all(i.startswith(answer_id) for i in seen)


async def test_a_joiner_leaving_does_not_cancel(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=50, token_delay=0.005))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as asker:
            await asker.send_message(json.dumps({"type": "message", "content": "go"}))
            await receive(asker)
            async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as joiner:
                assert (await receive(joiner))["type"] == "snapshot"
            events = await receive_until_final(asker)
        assert events[-1]["type"] == "done"


async def test_a_detached_answer_runs_to_its_end_after_its_client_left(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=60, token_delay=0.005))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        await start(client, chat_id, detach=True)  # the asker leaves after one token
        with trio.fail_after(10):
            stored = await eventually(lambda: answer_stored(client, chat_id))
        assert stored[-1]["status"] == "complete"
        assert stored[-1]["content"] == "".join(f"t{n} " for n in range(60))
        # Over HTTP too: the stream is cut, the answer goes on.
        chat_id = await new_chat(client)
        async with client.stream(
            "POST",
            f"/api/chats/{chat_id}/messages",
            json={"content": "go", "stream": True, "detach": True},
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: token"):
                    break
        with trio.fail_after(10):
            stored = await eventually(lambda: answer_stored(client, chat_id))
        assert stored[-1]["status"] == "complete"
        # Without detach the asker leaving cancels, as before.
        chat_id = await new_chat(client)
        await start(client, chat_id)
        with trio.fail_after(10):
            stored = await eventually(lambda: answer_stored(client, chat_id))
        assert stored[-1]["status"] == "cancelled"


async def test_a_detached_json_request_answers_when_the_answer_ends(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["a", "b"]))
    async with chat_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages", json={"content": "go", "detach": True}
        )
        assert response.status_code == 200, response.text
        assert response.json()["message"]["content"] == "ab"
