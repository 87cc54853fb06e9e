"""The app inside a test: settings by keyword, served on loopback, and a client for it.

The app runs under Hypercorn's Trio worker in the test's own Trio run, on a
free loopback port, and the client talks to it over real HTTP and WebSocket
connections. That costs a millisecond or two per request more than an ASGI
test client, and buys what such a client cannot show: a client that goes away
mid-stream, a body that stalls, the bytes of the wire. Everything a test
changes (deadlines, the LLM's behaviour) it changes by value, never through
the environment, so tests cannot leak settings into each other.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket
from hypercorn.config import Config
from hypercorn.trio import serve

from .._config import Settings
from ._fake_llm import FakeLLM

__all__ = [
    "AutoBotClient",
    "ServerEvent",
    "app_settings",
    "closed_port_url",
    "parse_events",
    "serve_app",
]

_SETTINGS_FIELDS = frozenset(f.name for f in fields(Settings))


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` of a port that was free a moment ago: connecting is refused.

    The default LLM URL of an app a test builds without a fake LLM, so that a
    test that forgot one fails at once instead of reaching a real Ollama.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def app_settings(data_dir: Path, *, llm: FakeLLM | None = None, **values: Any) -> Settings:
    """:class:`~autobot.Settings` for a test: its own ``data_dir``, then ``values``.

    ``values`` are fields of ``Settings`` by name (``api_token="t"``,
    ``deadlines={"llm.idle": 0.05}``, ``llm_provider="openai"``, ...); an
    unknown name raises ``TypeError``. ``llm`` points ``llm_url`` at a fake
    LLM in the format of ``llm_provider``; without either the URL is a
    closed port. Nothing is read from the environment or a TOML file.
    """
    unknown = sorted(set(values) - _SETTINGS_FIELDS)
    if unknown:
        raise TypeError(f"not a setting: {', '.join(unknown)}")
    settings = replace(Settings(data_dir=data_dir), **values)
    if "llm_url" not in values:
        url = llm.url("openai" if settings.llm_provider == "openai" else "ollama") if llm else None
        settings = replace(settings, llm_url=url or closed_port_url())
    if "deadlines" in values:
        settings = replace(settings, deadlines=dict(values["deadlines"]))
    return settings


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event of a streamed answer: ``token``, ``done`` or ``error``."""

    event: str
    data: Any


def parse_events(text: str) -> list[ServerEvent]:
    """The events of a ``text/event-stream`` body (comments such as keepalives left out)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if data:
            events.append(ServerEvent(name, json.loads("\n".join(data))))
    return events


class AutoBotClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` for one served app, with WebSocket and chat helpers.

    Everything of httpx works (``client.get("/api/health")``, ``client.stream``);
    ``token`` is sent as ``Authorization: Bearer`` on every request and
    WebSocket handshake. Requests have no timeout of their own: bound a test
    with ``trio.fail_after`` (or let pytest-timeout do it).
    """

    def __init__(self, base_url: str, *, token: str | None = None, **options: Any) -> None:
        headers = dict(options.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        options.setdefault("timeout", None)
        super().__init__(base_url=base_url, headers=headers, **options)
        self.token = token

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>``."""
        return str(self.base_url).rstrip("/")

    def ws_url(self, path: str) -> str:
        """``ws://127.0.0.1:<port><path>``."""
        return "ws" + self.url.removeprefix("http") + path

    @asynccontextmanager
    async def websocket(
        self, path: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """Open a WebSocket to ``path`` (with the client's token); closed on exit.

        A refused handshake raises ``trio_websocket.ConnectionRejected`` (its
        ``status_code`` is the HTTP status). Opens a nursery of its own (that
        of trio-websocket): use it in the task that uses the socket.
        """
        extra = [(name, value) for name, value in (headers or {}).items()]
        if self.token is not None and not any(n.lower() == "authorization" for n, _ in extra):
            extra.append(("Authorization", f"Bearer {self.token}"))
        async with trio_websocket.open_websocket_url(self.ws_url(path), extra_headers=extra) as ws:
            yield ws

    async def new_chat(self, title: str = "test") -> str:
        """Create a chat; its id."""
        response = await self.post("/api/chats", json={"title": title})
        response.raise_for_status()
        return str(response.json()["chat"]["id"])

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        """The stored messages of a chat, oldest first."""
        response = await self.get(f"/api/chats/{chat_id}")
        response.raise_for_status()
        return list(response.json()["messages"])

    async def ask(self, chat_id: str, content: str, **fields: Any) -> list[ServerEvent]:
        """Ask for a streamed answer and read it to its end: the events, in order.

        ``fields`` join the body (``model=``, ``knowledge=True``). An answer
        that was refused (409, 422, ...) raises ``httpx.HTTPStatusError``.
        """
        body = {"content": content, "stream": True, **fields}
        response = await self.post(f"/api/chats/{chat_id}/messages", json=body)
        response.raise_for_status()
        return parse_events(response.text)


@asynccontextmanager
async def serve_app(
    app: Any, *, token: str | None = None, graceful_s: float = 0.5
) -> AsyncIterator[AutoBotClient]:
    """Serve ``app`` (any ASGI app) on a free loopback port; yield a client pointed at it.

    Hypercorn runs the app's lifespan first, so the services are open when
    the block starts. On exit the server shuts down gracefully: requests still
    open get ``graceful_s`` seconds, then the lifespan runs to its end (the
    services close). If the block raises, the server is stopped the same way.
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = graceful_s
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        try:
            async with AutoBotClient(binds[0], token=token) as client:
                yield client
        finally:
            shutdown.set()
