"""Bearer-token authentication on HTTP routes and WebSocket handshakes."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio_websocket
from quart import websocket

from autobot import Settings
from autobot.api import create_app
from tests.support.serving import served

TOKEN = "s3cret-token"


@pytest.fixture
def app(settings: Settings):
    app = create_app(dataclasses.replace(settings, api_token=TOKEN))

    @app.websocket("/api/test/echo")
    async def echo() -> None:
        await websocket.accept()
        await websocket.send(await websocket.receive())

    return app


async def test_protected_route_needs_the_token(app) -> None:
    async with served(app) as client:
        missing = await client.get("/api/deadlines")
        wrong = await client.get("/api/deadlines", headers={"Authorization": "Bearer nope"})
        right = await client.get("/api/deadlines", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert wrong.status_code == 401
    assert right.status_code == 200


async def test_health_is_open_without_token(app) -> None:
    async with served(app) as client:
        response = await client.get("/api/health")
    assert response.status_code == 200


async def test_unknown_api_route_without_token_is_401_not_404(app) -> None:
    # Unauthenticated clients learn nothing about which routes exist.
    async with served(app) as client:
        response = await client.get("/api/nope")
    assert response.status_code == 401


def _ws_url(base_url: str, path: str) -> str:
    return base_url.replace("http://", "ws://") + path


async def test_websocket_refused_without_token(app) -> None:
    async with served(app) as client:
        url = _ws_url(str(client.base_url), "/api/test/echo")
        with pytest.raises(trio_websocket.HandshakeError) as caught:
            async with trio_websocket.open_websocket_url(url):
                pass
    assert isinstance(caught.value, trio_websocket.ConnectionRejected)
    assert caught.value.status_code == 401


@pytest.mark.parametrize("how", ["header", "query"])
async def test_websocket_accepts_header_or_query_token(app, how: str) -> None:
    async with served(app) as client:
        url = _ws_url(str(client.base_url), "/api/test/echo")
        headers = []
        if how == "header":
            headers = [("Authorization", f"Bearer {TOKEN}")]
        else:
            url += f"?token={TOKEN}"
        with trio.fail_after(5):
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
