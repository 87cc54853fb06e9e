"""Serving a real app over loopback with Hypercorn's Trio worker, inside a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["served"]


@asynccontextmanager
async def served(app: Any, *, graceful_s: float = 0.5) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` on a free loopback port; yield an httpx client pointed at it.

    On exit the server shuts down gracefully (its lifespan runs to the end).
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = graceful_s
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        try:
            async with httpx.AsyncClient(base_url=binds[0], timeout=None) as client:
                yield client
        finally:
            shutdown.set()
