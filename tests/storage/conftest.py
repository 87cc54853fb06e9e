"""The ``store`` fixture: every contract test runs once per backend."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from autobot.redis import open_redis
from autobot.storage import Store, open_embedded_store, open_redis_store
from tests.support.redis_server import RedisProcess


@pytest.fixture(params=["embedded", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    if request.param == "embedded":
        async with open_embedded_store(tmp_path / "store") as embedded:
            yield embedded
    else:
        server: RedisProcess = request.getfixturevalue("shared_redis")
        server.command("FLUSHALL")
        async with open_redis(server.url, decode_responses=True) as client:
            async with open_redis_store(client) as redis_store:
                yield redis_store
