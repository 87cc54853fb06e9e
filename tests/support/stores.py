"""Opening a real store of either backend for a test."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from autobot.redis import open_redis
from autobot.storage import Store, open_embedded_store, open_redis_store
from tests.support.redis_server import RedisProcess

__all__ = ["BACKENDS", "backend_store"]

BACKENDS = ["embedded", "redis"]


@asynccontextmanager
async def backend_store(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[Store]:
    """The store named by ``request.param``: embedded under ``tmp_path``, or the shared Redis."""
    if request.param == "embedded":
        async with open_embedded_store(tmp_path / "store") as embedded:
            yield embedded
    else:
        server: RedisProcess = request.getfixturevalue("shared_redis")
        server.command("FLUSHALL")
        async with open_redis(server.url, decode_responses=True) as client:
            async with open_redis_store(client) as redis_store:
                yield redis_store
