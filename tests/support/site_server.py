"""A small web site served by Hypercorn on a loopback address, for the crawling tests.

``Site`` maps paths to canned answers and records every path asked for, so a
test can tell which pages a crawler fetched (and that it never fetched some).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["Answer", "Site", "html_page", "serve_site"]


@dataclass(slots=True)
class Answer:
    """One canned answer: status, body, content type and extra headers."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def html_page(title: str, body: str) -> Answer:
    head = f"<head><title>{title}</title></head>"
    return Answer(f"<!doctype html><html>{head}<body>{body}</body></html>".encode())


class Site:
    """An ASGI app answering from ``pages`` (path with query → answer); 404 otherwise."""

    def __init__(self, pages: dict[str, Answer] | None = None) -> None:
        self.pages: dict[str, Answer] = dict(pages or {})
        self.hits: list[str] = []
        self.hosts: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"] + (
            f"?{scope['query_string'].decode()}" if scope["query_string"] else ""
        )
        self.hits.append(path)
        self.hosts.append(dict(scope["headers"]).get(b"host", b"").decode())
        answer = self.pages.get(path) or Answer(b"not here", 404, "text/plain")
        headers = [(b"content-type", answer.content_type.encode())]
        headers += [(name.encode(), value.encode()) for name, value in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


@asynccontextmanager
async def serve_site(
    site: Site, host: str = "127.0.0.1", *, tls: tuple[str, str] | None = None
) -> AsyncIterator[str]:
    """Serve ``site`` on a free port of ``host``; yield its base URL (``http://host:port``).

    ``tls``: (certificate file, key file) to serve HTTPS (the URL is then ``https://``).
    """
    config = Config()
    config.bind = [f"{host}:0"]
    if tls is not None:
        config.certfile, config.keyfile = tls
    config.accesslog = None
    config.graceful_timeout = 0.2
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, site, config, shutdown_trigger=shutdown.wait))
        try:
            yield binds[0]
        finally:
            shutdown.set()
