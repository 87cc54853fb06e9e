"""The agent routes over the wire, on both backends, and across two server processes on Redis."""

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
from autobot.agents import MAX_PAYLOAD_BYTES, HandoverState
from autobot.api import create_app
from autobot.api._agents import MAX_MESSAGE_BODY_BYTES, DeliveryBody
from tests.support.polling import eventually
from tests.support.process import run_server
from tests.support.redis_server import RedisProcesses
from tests.support.serving import served


@asynccontextmanager
async def agents_server(
    settings: Settings, **deadlines: float
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app on a real port, its client, and its services (to watch the bus)."""
    if deadlines:
        settings = dataclasses.replace(
            settings, deadlines={k.replace("_", "."): v for k, v in deadlines.items()}
        )
    app = create_app(settings)
    async with served(app) as client:
        yield client, app.extensions["autobot.services"]


def message(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "event", "payload": {"name": name}, "sender": "cli"} | fields


async def send(client: httpx.AsyncClient, agent: str, body: dict[str, Any]) -> str:
    response = await client.post(f"/api/agents/{agent}/messages", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def receive(client: httpx.AsyncClient, agent: str, query: str = "") -> list[dict]:
    response = await client.get(f"/api/agents/{agent}/messages?{query}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def names(messages: list[dict]) -> list[str]:
    return [m["payload"]["name"] for m in messages]


# -- sending and receiving --------------------------------------------------------------------


async def test_messages_come_highest_priority_first_then_oldest_first(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, _):
        ids = {}
        for name, priority in [
            ("n1", "normal"),
            ("l1", "low"),
            ("c1", "critical"),
            ("n2", None),
            ("h1", "high"),
            ("c2", "critical"),
        ]:
            body = message(name) if priority is None else message(name, priority=priority)
            ids[name] = await send(client, "planner", body)
        first = await receive(client, "planner", "max=3")
        rest = await receive(client, "planner", "max=10")
        assert await receive(client, "planner") == []
    assert names(first) == ["c1", "c2", "h1"]
    assert names(rest) == ["n1", "n2", "l1"]
    assert [m["priority"] for m in first + rest] == [
        "critical",
        "critical",
        "high",
        "normal",
        "normal",
        "low",
    ]
    got = first[0]
    assert got["id"] == ids["c1"]
    assert set(got) == {
        "id",
        "type",
        "priority",
        "sender",
        "recipient",
        "payload",
        "created_at",
        "ttl_s",
    }
    assert (got["type"], got["sender"], got["recipient"], got["ttl_s"]) == (
        "event",
        "cli",
        "planner",
        None,
    )


async def test_broadcast_reaches_every_registered_agent_exactly_once(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, _):
        for agent in ("alpha", "beta"):
            assert await receive(client, agent) == []  # a receive registers
        await send(client, "monitor", message("beat", type="heartbeat", sender="gamma"))
        assert (await client.get("/api/agents")).json() == {"agents": ["alpha", "beta", "gamma"]}
        response = await client.post("/api/agents/broadcast", json=message("all"))
        assert response.status_code == 202
        sent = response.json()
        assert sent["recipients"] == ["alpha", "beta", "gamma"] and sent["recipient_count"] == 3
        for agent in ("alpha", "beta", "gamma"):
            (copy,) = await receive(client, agent, "max=10")
            assert (copy["id"], copy["recipient"], names([copy])) == (sent["id"], agent, ["all"])
            assert await receive(client, agent, "max=10") == []
        assert names(await receive(client, "monitor")) == ["beat"]  # not registered: no copy


async def test_a_blocking_receive_returns_when_a_message_arrives(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, services):
        got: list[dict] = []

        async def wait_for_one() -> None:
            got.extend(await receive(client, "sleepy", "wait=30"))

        async def waiting() -> bool:
            return services.agents.waiting("sleepy") == 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_one)
            with trio.fail_after(5):
                await eventually(waiting, interval_s=0.01)
            started = trio.current_time()
            await send(client, "sleepy", message("wake"))
        assert trio.current_time() - started < 5
    assert names(got) == ["wake"]


async def test_a_blocking_receive_with_nothing_arriving_is_empty_after_its_wait(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, _):
        started = trio.current_time()
        assert await receive(client, "lonely", "wait=0.4") == []
        assert trio.current_time() - started >= 0.4


async def test_a_wait_is_bounded_by_itself_not_by_http_request(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings, http_request=0.2) as (client, _):
        started = trio.current_time()
        assert await receive(client, "patient", "wait=0.8") == []
        assert trio.current_time() - started >= 0.8
        await send(client, "patient", message("still"))  # an ordinary route, as before
        assert names(await receive(client, "patient", "wait=1")) == ["still"]


async def test_a_receiver_that_leaves_mid_wait_loses_nothing(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, services):
        bus = services.agents

        def waiting(count: int) -> Any:
            async def check() -> bool:
                return bus.waiting("planner") == count

            return check

        with trio.fail_after(10):
            with trio.CancelScope() as request_scope:
                async with trio.open_nursery() as nursery:

                    async def leave_when_waiting() -> None:
                        await eventually(waiting(1), interval_s=0.01)
                        request_scope.cancel()  # the client goes: httpx drops the connection

                    nursery.start_soon(leave_when_waiting)
                    await receive(client, "planner", "wait=30")
            assert request_scope.cancelled_caught
            await eventually(waiting(0), interval_s=0.01)  # the server saw it and stopped
        await send(client, "planner", message("after"))
        assert names(await receive(client, "planner", "wait=5")) == ["after"]
        assert bus.counts()["delivered"] == 1 and bus.handovers() == 0


async def test_messages_whose_response_was_not_written_go_back_first(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, services):
        bus = services.agents
        for name, priority in [("n1", "normal"), ("h1", "high"), ("n2", "normal")]:
            await send(client, "planner", message(name, priority=priority))
        handover = await bus.take("planner", 2, block=False)
        body = DeliveryBody(handover)
        with pytest.raises(OSError):
            async with body as chunks:
                first = await anext(aiter(chunks))
                assert names(json.loads(first)["messages"]) == ["h1", "n1"]
                raise OSError("the connection broke while the body was written")

        async def returned() -> bool:
            return handover.state is HandoverState.RETURNED

        with trio.fail_after(5):  # the app's sweeper hands them back
            await eventually(returned, interval_s=0.01)
        assert names(await receive(client, "planner", "max=10")) == ["h1", "n1", "n2"]

        await send(client, "planner", message("n3"))
        written = DeliveryBody(await bus.take("planner", 5, block=False))
        async with written as chunks:
            data = [chunk async for chunk in chunks]
        assert names(json.loads(b"".join(data))["messages"]) == ["n3"]
        assert await receive(client, "planner") == []
        assert bus.counts()["handed_back"] == 2 and bus.handovers() == 0


async def test_shutdown_ends_a_wait_with_an_empty_answer(backend_settings: Settings) -> None:
    async with agents_server(backend_settings) as (client, services):

        async def waiting() -> bool:
            return services.agents.waiting("late") == 1

        async with trio.open_nursery() as nursery:
            answers: list[list[dict]] = []

            async def wait() -> None:
                answers.append(await receive(client, "late", "wait=30"))

            nursery.start_soon(wait)
            with trio.fail_after(5):
                await eventually(waiting, interval_s=0.01)
            services.begin_shutdown()
        assert answers == [[]]


async def test_expired_messages_are_never_delivered_and_are_counted(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, services):
        await send(client, "a", message("brief", ttl_s=0.001))
        await send(client, "a", message("lasting", ttl_s=60))
        await trio.sleep(0.02)  # the first one's ttl lapses (wall clock)
        got = await receive(client, "a", "max=10")
        assert names(got) == ["lasting"] and got[0]["ttl_s"] == 60
        assert services.agents.counts()["expired"] == 1
        metrics = (await client.get("/api/metrics")).text
    assert 'autobot_agent_messages_total{event="expired"} 1.0' in metrics
    assert 'autobot_agent_messages_total{event="delivered"} 1.0' in metrics


# -- what is refused -------------------------------------------------------------------------

BAD_BODIES: list[tuple[Any, str]] = [
    (message("x", type="HIGH"), "type"),
    (message("x", type="Event"), "type"),
    (message("x", type="MessageType.BROADCAST"), "type"),
    (message("x", type=3), "type"),
    (message("x", type=None), "type"),
    ({"payload": 1, "sender": "cli"}, "type"),
    (message("x", priority="HIGH"), "priority"),
    (message("x", priority="Priority.HIGH"), "priority"),
    (message("x", priority=3), "priority"),
    (message("x", priority=None), "priority"),
    (message("x", priority=""), "priority"),
    (message("x", sender="has space"), "sender"),
    (message("x", sender="a:b"), "sender"),
    (message("x", sender=""), "sender"),
    (message("x", sender=7), "sender"),
    ({"type": "event", "payload": 1}, "sender"),
    ({"type": "event", "sender": "cli"}, "payload"),
    (message("x", ttl_s=0), "ttl_s"),
    (message("x", ttl_s=-5), "ttl_s"),
    (message("x", ttl_s=86_401), "ttl_s"),
    (message("x", ttl_s="10"), "ttl_s"),
    (message("x", ttl_s=None), "ttl_s"),
    (message("x", recipient="other"), "recipient"),
    ([message("x")], "(body)"),
]


async def test_bad_bodies_are_422_naming_the_field_and_what_it_accepts(
    backend_settings: Settings,
) -> None:
    async with agents_server(backend_settings) as (client, _):
        for path in ("/api/agents/planner/messages", "/api/agents/broadcast"):
            for body, field in BAD_BODIES:
                response = await client.post(path, json=body)
                assert response.status_code == 422, (path, body)
                error = response.json()["error"]
                assert error["code"] == "validation_error"
                assert [f["field"] for f in error["fields"]] == [field], body
                if field == "type":
                    assert (
                        "'request', 'response', 'broadcast', 'event', 'heartbeat'"
                        in (error["fields"][0]["message"])
                    )
                if field == "priority":
                    assert "'low', 'normal', 'high', 'critical'" in error["fields"][0]["message"]
        assert await receive(client, "planner", "max=100") == []


@pytest.mark.parametrize(
    "agent", ["has%20space", "colon:name", "a" * 65, ".hidden", "-x", "%C3%A9", "a%00b"]
)
async def test_bad_agent_names_in_the_path_are_422(settings: Settings, agent: str) -> None:
    async with agents_server(settings) as (client, _):
        sent = await client.post(f"/api/agents/{agent}/messages", json=message("x"))
        got = await client.get(f"/api/agents/{agent}/messages")
    for response in (sent, got):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["fields"][0]["field"] == "agent"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("wait=61", "wait"),
        ("wait=60.5", "wait"),
        ("wait=-1", "wait"),
        ("wait=abc", "wait"),
        ("wait=1e3", "wait"),
        ("wait=nan", "wait"),
        ("wait=inf", "wait"),
        ("wait=", "wait"),
        ("wait=%205", "wait"),
        ("max=0", "max"),
        ("max=101", "max"),
        ("max=1.5", "max"),
        ("max=-3", "max"),
    ],
)
async def test_bad_wait_and_max_are_422(settings: Settings, query: str, field: str) -> None:
    async with agents_server(settings) as (client, _):
        response = await client.get(f"/api/agents/planner/messages?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == field


async def test_the_payload_limit_is_64_kib_of_encoded_json(backend_settings: Settings) -> None:
    at_limit = "x" * (MAX_PAYLOAD_BYTES - 2)  # plus its two quotes
    async with agents_server(backend_settings) as (client, _):
        await send(client, "big", {"type": "event", "payload": at_limit, "sender": "cli"})
        over = {"type": "event", "payload": at_limit + "x", "sender": "cli"}
        response = await client.post("/api/agents/big/messages", json=over)
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "payload_too_large"
        assert (error["limit_bytes"], error["size_bytes"]) == (
            MAX_PAYLOAD_BYTES,
            MAX_PAYLOAD_BYTES + 1,
        )
        (got,) = await receive(client, "big")
        assert got["payload"] == at_limit


async def test_a_body_over_the_limit_is_refused_before_it_is_sent(settings: Settings) -> None:
    async with agents_server(settings) as (client, _):
        host, port = client.base_url.host, client.base_url.port
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                f"POST /api/agents/big/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {MAX_MESSAGE_BODY_BYTES + 1}\r\n\r\n".encode()
            )
            received = b""
            with trio.fail_after(5):  # no byte of the body was sent
                while not received.rstrip().endswith(b"}"):
                    chunk = await stream.receive_some()
                    assert chunk, received
                    received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "payload_too_large"


async def test_the_routes_are_in_the_openapi_document(settings: Settings) -> None:
    async with agents_server(settings) as (client, _):
        paths = (await client.get("/api/openapi.json")).json()["paths"]
    assert {"/api/agents", "/api/agents/broadcast"} <= set(paths)
    assert {"get", "post"} <= set(paths["/api/agents/{agent}/messages"])


# -- two server processes on one Redis ----------------------------------------------------------


@pytest.mark.slow
async def test_the_bus_spans_two_server_processes_on_one_redis(tmp_path) -> None:
    processes = RedisProcesses(tmp_path / "redis")
    redis = processes.redis()
    common = {"AUTOBOT_REDIS_URL": redis.url, "AUTOBOT_DATA_DIR": str(tmp_path / "data")}
    try:
        async with (
            run_server(common) as one,
            run_server(common) as other,
            httpx.AsyncClient(base_url=one.url, timeout=None) as on_one,
            httpx.AsyncClient(base_url=other.url, timeout=None) as on_other,
        ):
            # Sent on one, received on the other, in priority order.
            await send(on_one, "coder", message("later"))
            await send(on_one, "coder", message("first", priority="critical"))
            assert names(await receive(on_other, "coder", "max=10")) == ["first", "later"]

            # A receive waiting on one process wakes for a send on the other.
            async with trio.open_nursery() as nursery:
                got: list[dict] = []

                async def wait_on_other() -> None:
                    got.extend(await receive(on_other, "reviewer", "wait=30"))

                nursery.start_soon(wait_on_other)

                async def registered() -> bool:
                    agents = (await on_one.get("/api/agents")).json()["agents"]
                    return "reviewer" in agents

                with trio.fail_after(10):
                    await eventually(registered, interval_s=0.02)
                await send(on_one, "reviewer", message("ping"))
            assert names(got) == ["ping"]

            # A broadcast from one reaches agents registered on either, once each.
            assert await receive(on_one, "alpha") == []
            assert await receive(on_other, "beta") == []
            response = await on_one.post("/api/agents/broadcast", json=message("all"))
            assert response.status_code == 202
            assert response.json()["recipients"] == ["alpha", "beta", "coder", "reviewer"]
            for client, agent in [
                (on_other, "alpha"),
                (on_one, "beta"),
                (on_one, "coder"),
                (on_other, "reviewer"),
            ]:
                assert names(await receive(client, agent, "max=10")) == ["all"]
                assert await receive(client, agent, "max=10") == []
    finally:
        processes.stop_all()
