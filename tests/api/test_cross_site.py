"""Host and Origin checks against DNS rebinding and cross-site pages, on the wire."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio_websocket
from quart import websocket

from autobot import Settings
from autobot.api import AutoBotApp, create_app
from tests.support.serving import served

ECHO = "/api/test/echo"


def app_for(settings: Settings, **changes: object) -> AutoBotApp:
    app = create_app(dataclasses.replace(settings, **changes))

    @app.websocket(ECHO)
    async def echo() -> None:
        await websocket.accept()
        await websocket.send(await websocket.receive())

    return app


@asynccontextmanager
async def serving(
    settings: Settings, **changes: object
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    async with served(app_for(settings, **changes)) as client:
        yield client, client.base_url.port or 0


async def handshake(
    port: int, host: str, headers: Sequence[tuple[str, str]] = ()
) -> trio_websocket.ConnectionRejected | None:
    """Open a WebSocket to our loopback port sending ``Host: host``; the rejection, if any."""
    extra = [(name.encode(), value.encode()) for name, value in headers]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    rejections: list[trio_websocket.ConnectionRejected] = []
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, host, ECHO, extra_headers=extra
                )
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
                await ws.aclose()
    except* trio_websocket.ConnectionRejected as group:
        rejections.extend(group.exceptions)  # type: ignore[arg-type]
    finally:
        await stream.aclose()
    assert len(rejections) <= 1
    return rejections[0] if rejections else None


def assert_refused(status: int, body: bytes | str | None, code: str) -> None:
    assert status == 403
    assert body is not None
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["message"]


# --- Host: DNS rebinding -----------------------------------------------------


async def test_loopback_server_answers_only_its_own_names(settings: Settings) -> None:
    async with serving(settings) as (client, port):
        allowed = [
            "localhost",
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            "127.0.0.1",
            f"[::1]:{port}",
            "LocalHost.",
            "localhost:9999",  # a forwarded port (ssh -L) keeps the name
        ]
        for host in allowed:
            response = await client.get("/api/health", headers={"Host": host})
            assert response.status_code == 200, host
        for host in ["evil.example", f"evil.example:{port}", f"0.0.0.0:{port}", "[::1"]:
            response = await client.get("/api/health", headers={"Host": host})
            assert_refused(response.status_code, response.content, "host_not_allowed")
            assert response.headers["content-type"] == "application/json"


async def test_the_page_and_unknown_routes_are_guarded_too(settings: Settings) -> None:
    async with serving(settings) as (client, _):
        for path in ["/", "/api/no/such/route"]:
            response = await client.get(path, headers={"Host": "evil.example"})
            assert_refused(response.status_code, response.content, "host_not_allowed")


async def test_host_is_refused_before_the_token_is_asked_for(settings: Settings) -> None:
    async with serving(settings, api_token="tok") as (client, _):
        response = await client.get("/api/deadlines", headers={"Host": "evil.example"})
    assert_refused(response.status_code, response.content, "host_not_allowed")


async def test_listed_hosts_are_added_and_star_allows_any(settings: Settings) -> None:
    async with serving(settings, allowed_hosts=("autobot.lan", "box.example:8443")) as (client, _):
        assert (
            await client.get("/api/health", headers={"Host": "autobot.lan:1"})
        ).status_code == 200
        assert (
            await client.get("/api/health", headers={"Host": "box.example:8443"})
        ).status_code == 200
        assert (await client.get("/api/health", headers={"Host": "box.example"})).status_code == 403
        assert (await client.get("/api/health", headers={"Host": "localhost"})).status_code == 200
    async with serving(settings, allowed_hosts=("*",)) as (client, _):
        assert (
            await client.get("/api/health", headers={"Host": "evil.example"})
        ).status_code == 200


async def test_beyond_loopback_any_host_unless_listed(settings: Settings) -> None:
    # The policy follows the configured listen address; the test server itself
    # stays on loopback.
    async with serving(settings, host="0.0.0.0") as (client, _):
        assert (await client.get("/api/health", headers={"Host": "my-box.lan"})).status_code == 200
    async with serving(settings, host="0.0.0.0", allowed_hosts=("my-box.lan",)) as (client, port):
        assert (await client.get("/api/health", headers={"Host": "my-box.lan"})).status_code == 200
        assert (
            await client.get("/api/health", headers={"Host": "evil.example"})
        ).status_code == 403
        # The address the connection arrived at involves no DNS: always answered.
        assert (
            await client.get("/api/health", headers={"Host": f"127.0.0.1:{port}"})
        ).status_code == 200


async def test_websocket_with_foreign_host_is_refused(settings: Settings) -> None:
    async with serving(settings) as (_, port):
        refused = await handshake(port, "evil.example")
        accepted = await handshake(port, f"localhost:{port}")
    assert refused is not None
    assert_refused(refused.status_code, refused.body, "host_not_allowed")
    assert accepted is None


# --- Origin: cross-site pages -----------------------------------------------


async def test_websocket_origins(settings: Settings) -> None:
    async with serving(settings) as (_, port):
        host = f"127.0.0.1:{port}"
        same = await handshake(port, host, [("Origin", f"http://{host}")])
        other_loopback_name = await handshake(port, host, [("Origin", f"http://localhost:{port}")])
        no_origin = await handshake(port, host)
        refused = {
            origin: await handshake(port, host, [("Origin", origin)])
            for origin in [
                "https://evil.example",
                f"http://localhost:{port + 1 if port < 65535 else 1}",  # another local app
                "null",
                "not an origin",
            ]
        }
    assert same is None
    assert other_loopback_name is None
    assert no_origin is None  # not a browser: nothing to protect against
    for origin, rejection in refused.items():
        assert rejection is not None, origin
        assert_refused(rejection.status_code, rejection.body, "origin_not_allowed")


async def test_listed_origins_and_star(settings: Settings) -> None:
    async with serving(settings, allowed_origins=("https://app.example",)) as (_, port):
        host = f"127.0.0.1:{port}"
        listed = await handshake(port, host, [("Origin", "https://app.example")])
        unlisted = await handshake(port, host, [("Origin", "https://app.example:8443")])
    async with serving(settings, allowed_origins=("*",)) as (_, port):
        anything = await handshake(port, f"127.0.0.1:{port}", [("Origin", "https://evil.example")])
    assert listed is None
    assert unlisted is not None and unlisted.status_code == 403
    assert anything is None


async def test_origin_is_refused_before_the_token_is_asked_for(settings: Settings) -> None:
    async with serving(settings, api_token="tok") as (_, port):
        url = f"ws://127.0.0.1:{port}{ECHO}?token=tok"
        with pytest.raises(trio_websocket.ConnectionRejected) as caught:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[(b"Origin", b"https://evil.example")]
            ):
                pass
    assert_refused(caught.value.status_code, caught.value.body, "origin_not_allowed")


async def test_state_changing_requests_from_other_sites_are_refused(settings: Settings) -> None:
    evil = {"Origin": "https://evil.example"}
    async with serving(settings) as (client, port):
        post = await client.post("/api/chats", json={}, headers=evil)
        delete = await client.delete("/api/chats/x", headers=evil)
        # A cross-site page cannot read a GET's answer (no CORS headers): not refused.
        get = await client.get("/api/chats", headers=evil)
        same = await client.post(
            "/api/chats", json={}, headers={"Origin": f"http://127.0.0.1:{port}"}
        )
        without = await client.post("/api/chats", json={})
        chats = (await client.get("/api/chats")).json()["chats"]
    assert_refused(post.status_code, post.content, "origin_not_allowed")
    assert_refused(delete.status_code, delete.content, "origin_not_allowed")
    assert get.status_code == 200
    assert same.status_code == 201
    assert without.status_code == 201
    assert len(chats) == 2  # the refused POST created nothing
