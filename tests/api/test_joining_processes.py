"""Joining an answer from another server process, and what a finished answer leaves behind.

A joiner that reaches another process than the asker's reads the answer so
far from Redis (the chat's ``answering`` key and the answer's stream) and the
rest from the chat's channel. When an answer ends, however it ends, that
progress is dropped: no Redis key of the answer remains, and the embedded
store no longer holds it (its attach route answers 204).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from autobot.redis import Redis, open_redis
from autobot.testing import AutoBotClient, FakeLLM, RedisProcess, Scenario
from tests.api.test_chat_websocket import receive, receive_until_final

# The store's key prefix (``RedisStore``'s default, which the app uses).
PREFIX = "autobot:"
FINAL = ("done", "error", "cancelled")
# Long enough that a joiner connects mid-answer on a loaded machine, short
# enough for a quick test: 400 tokens about 4 ms apart.
LONG = Scenario(tokens=400, token_delay=0.004)


@dataclass(frozen=True)
class SSEvent:
    """One server-sent event, with its ``id`` (``<answer id>:<seq>``) kept."""

    name: str
    id: str | None
    data: dict[str, Any]


async def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[SSEvent]:
    """The events of an event stream, up to its final one or ``stop_after`` events."""
    events: list[SSEvent] = []
    fields: dict[str, str] = {}
    with trio.fail_after(10):
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
                continue
            if "data" in fields:
                data = json.loads(fields["data"])
                events.append(SSEvent(fields.get("event", "message"), fields.get("id"), data))
            fields = {}
            if events and (events[-1].name in FINAL or len(events) == stop_after):
                break
    return events


def ws_path(chat_id: str) -> str:
    return f"/api/chats/{chat_id}/ws"


def tokens_text(events: list[dict[str, Any]]) -> str:
    return "".join(event["delta"] for event in events if event["type"] == "token")


def token_seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events if event["type"] == "token"]


def asker_tokens(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The asker's tokens, checked whole: ``seq`` 1, 2, ... then ``done``.

    A ``seq`` numbers the pieces the server streamed, and the server joins
    pieces that reach it together, so their count is not the fake's token count.
    """
    assert events[-1]["type"] == "done", events[-1]
    tokens = [event for event in events if event["type"] == "token"]
    assert [token["seq"] for token in tokens] == list(range(1, len(tokens) + 1))
    return tokens


def assert_snapshot_mid_answer(snapshot: dict[str, Any], tokens: list[dict[str, Any]]) -> None:
    """A ``snapshot`` of the answer streaming: exactly the first ``seq`` of ``tokens``."""
    assert snapshot["type"] == "snapshot", snapshot
    message = snapshot["message"]
    assert (message["role"], message["status"]) == ("assistant", "streaming")
    assert 1 <= snapshot["seq"] < len(tokens)
    assert message["content"] == "".join(token["delta"] for token in tokens[: snapshot["seq"]])


# -- a joiner on another process -------------------------------------------------------------


@pytest.mark.slow  # two server processes
async def test_a_joiner_on_another_process_gets_the_snapshot_then_every_later_token_once(
    fake_llm: FakeLLM, redis_server: RedisProcess, autobot_server: Any
) -> None:
    await fake_llm.set_scenario(LONG)
    asking = await autobot_server(llm=fake_llm, redis_url=redis_server.url)
    joining = await autobot_server(llm=fake_llm, redis_url=redis_server.url)
    async with AutoBotClient(asking.url) as on_asking, AutoBotClient(joining.url) as on_joining:
        # Over WebSocket: the snapshot, then each later token once, then the end.
        chat_id = await on_asking.new_chat()
        async with on_asking.websocket(ws_path(chat_id)) as asker:
            await asker.send_message(json.dumps({"type": "message", "content": "go"}))
            asked = [await receive(asker)]
            async with on_joining.websocket(ws_path(chat_id)) as joiner:
                snapshot = await receive(joiner)
                joined = await receive_until_final(joiner)
            asked += await receive_until_final(asker)
        tokens = asker_tokens(asked)
        assert_snapshot_mid_answer(snapshot, tokens)
        assert token_seqs(joined) == list(range(snapshot["seq"] + 1, len(tokens) + 1))
        answer_id = snapshot["message"]["id"]
        assert {e["answer_id"] for e in joined if e["type"] == "token"} == {answer_id}
        stored = (await on_joining.messages(chat_id))[-1]
        assert (stored["status"], stored["content"]) == ("complete", LONG.text)
        assert tokens_text(tokens) == stored["content"]
        assert snapshot["message"]["content"] + tokens_text(joined) == stored["content"]
        assert joined[-1] == {"type": "done", "message": stored}

        # Over SSE: attach, cut after a few events, resume with Last-Event-ID.
        chat_id = await on_asking.new_chat()
        async with on_asking.websocket(ws_path(chat_id)) as asker:
            await asker.send_message(json.dumps({"type": "message", "content": "go"}))
            asked = [await receive(asker)]
            path = f"/api/chats/{chat_id}/stream"
            async with on_joining.stream("GET", path) as response:
                assert response.status_code == 200
                first = await read_sse(response, stop_after=6)
            cut_at = first[-1].id
            assert cut_at is not None
            async with on_joining.stream("GET", path, headers={"Last-Event-ID": cut_at}) as again:
                assert again.status_code == 200
                resumed = await read_sse(again)
            asked += await receive_until_final(asker)
        asked_tokens = asker_tokens(asked)
        snapshot_event, *before_cut = first
        assert snapshot_event.name == "snapshot"
        assert_snapshot_mid_answer({"type": "snapshot", **snapshot_event.data}, asked_tokens)
        answer_id = snapshot_event.data["message"]["id"]
        assert snapshot_event.id == f"{answer_id}:{snapshot_event.data['seq']}"
        followed = [*before_cut, *resumed[:-1]]
        assert {event.name for event in followed} == {"token"}
        seqs = [event.data["seq"] for event in followed]
        assert seqs == list(range(snapshot_event.data["seq"] + 1, len(asked_tokens) + 1))
        assert [event.id for event in followed] == [f"{answer_id}:{seq}" for seq in seqs]
        assert [event.data["delta"] for event in followed] == [
            token["delta"] for token in asked_tokens[snapshot_event.data["seq"] :]
        ]
        assert {token["answer_id"] for token in asked_tokens} == {answer_id}
        assert resumed[-1].name == "done"
        stored = (await on_asking.messages(chat_id))[-1]
        assert (stored["status"], stored["content"]) == ("complete", LONG.text)
        deltas = "".join(event.data["delta"] for event in followed)
        assert snapshot_event.data["message"]["content"] + deltas == stored["content"]
        assert resumed[-1].data["message"] == stored


# -- nothing left behind ---------------------------------------------------------------------

# What is checked while an answer streams, and after it ended: (client, chat id, answer id).
Check = Callable[[AutoBotClient, str, str], Awaitable[None]]


async def _first_token(ws: trio_websocket.WebSocketConnection) -> str:
    """Ask on ``ws``; the answer id its first token carries."""
    await ws.send_message(json.dumps({"type": "message", "content": "go"}))
    event = await receive(ws)
    assert event["type"] == "token", event
    return str(event["answer_id"])


async def end_answers(
    client: AutoBotClient, fake_llm: FakeLLM, while_streaming: Check, after: Check
) -> None:
    """Run answers that end complete, cancelled (two ways) and failed; check around each."""

    async def complete(ws: trio_websocket.WebSocketConnection, chat_id: str) -> str:
        answer_id = await _first_token(ws)
        await while_streaming(client, chat_id, answer_id)
        assert (await receive_until_final(ws))[-1]["type"] == "done"
        return answer_id

    async def cancel(ws: trio_websocket.WebSocketConnection, chat_id: str) -> str:
        answer_id = await _first_token(ws)
        await while_streaming(client, chat_id, answer_id)
        await ws.send_message(json.dumps({"type": "cancel"}))
        assert (await receive_until_final(ws))[-1]["type"] == "cancelled"
        return answer_id

    async def asker_leaves(watcher: trio_websocket.WebSocketConnection, chat_id: str) -> str:
        async with client.websocket(ws_path(chat_id)) as asker:
            answer_id = await _first_token(asker)
            await while_streaming(client, chat_id, answer_id)
        # The watcher sees the end once the progress is dropped and the answer stored.
        assert (await receive_until_final(watcher))[-1]["type"] == "cancelled"
        return answer_id

    async def fail(ws: trio_websocket.WebSocketConnection, chat_id: str) -> str:
        await ws.send_message(json.dumps({"type": "message", "content": "go"}))
        events = await receive_until_final(ws)
        assert events[-1]["type"] == "error", events[-1]
        return str(next(e for e in events if e["type"] == "token")["answer_id"])

    endings = [
        (complete, Scenario(tokens=60, token_delay=0.005), "complete"),
        (cancel, Scenario(tokens=1000, token_delay=0.005), "cancelled"),
        (asker_leaves, Scenario(tokens=1000, token_delay=0.005), "cancelled"),
        (fail, Scenario(tokens=20, error_after=3), "failed"),
    ]
    for run, scenario, status in endings:
        await fake_llm.set_scenario(scenario)
        chat_id = await client.new_chat()
        async with client.websocket(ws_path(chat_id)) as ws:
            answer_id = await run(ws, chat_id)
        assert (await client.messages(chat_id))[-1]["status"] == status, run.__name__
        await after(client, chat_id, answer_id)


async def attach_status(client: AutoBotClient, chat_id: str) -> int:
    """The status of ``GET /api/chats/{id}/stream``; an attached stream is left at once."""
    async with client.stream("GET", f"/api/chats/{chat_id}/stream") as response:
        return response.status_code


async def scan(redis: Redis, pattern: str) -> set[str]:
    found: set[str] = set()
    cursor = 0
    with trio.fail_after(5):
        while True:
            cursor, keys = await redis.scan(cursor, match=pattern, count=1000)
            found.update(keys)
            if cursor == 0:
                return found


def answer_keys(chat_id: str, answer_id: str) -> set[str]:
    """The keys an answer in progress holds: who answers, its tokens, the chat's claim."""
    return {
        f"{PREFIX}answering:{chat_id}",
        f"{PREFIX}answer:{answer_id}",
        f"{PREFIX}lease:answer:{chat_id}",
    }


async def test_redis_keeps_no_key_of_an_answer_that_ended(
    autobot_client: Any, fake_llm: FakeLLM, redis_server: RedisProcess
) -> None:
    client = await autobot_client(llm=fake_llm, redis_url=redis_server.url)
    async with open_redis(redis_server.url, decode_responses=True) as redis:

        async def while_streaming(client: AutoBotClient, chat_id: str, answer_id: str) -> None:
            # The patterns below find the progress, so finding nothing later means something.
            assert answer_keys(chat_id, answer_id) <= await scan(redis, f"{PREFIX}*")
            assert await redis.get(f"{PREFIX}answering:{chat_id}") == answer_id
            assert await redis.xlen(f"{PREFIX}answer:{answer_id}") >= 1
            for key in answer_keys(chat_id, answer_id):
                assert await redis.ttl(key) > 0, key  # a process that dies leaves nothing
            assert await attach_status(client, chat_id) == 200

        async def after(client: AutoBotClient, chat_id: str, answer_id: str) -> None:
            keys = await scan(redis, f"{PREFIX}*")
            left = {key for key in keys if chat_id in key or answer_id in key}
            assert left == {f"{PREFIX}chat:{chat_id}", f"{PREFIX}chat:{chat_id}:messages"}
            assert await attach_status(client, chat_id) == 204

        await end_answers(client, fake_llm, while_streaming, after)
        assert await scan(redis, f"{PREFIX}answering:*") == set()
        assert await scan(redis, f"{PREFIX}answer:*") == set()


async def test_the_embedded_store_forgets_an_answer_that_ended(
    autobot_client: Any, fake_llm: FakeLLM
) -> None:
    client = await autobot_client(llm=fake_llm)

    async def while_streaming(client: AutoBotClient, chat_id: str, answer_id: str) -> None:
        assert await attach_status(client, chat_id) == 200

    async def after(client: AutoBotClient, chat_id: str, answer_id: str) -> None:
        assert await attach_status(client, chat_id) == 204

    await end_answers(client, fake_llm, while_streaming, after)
