"""Fixtures for the Redis client's tests: real servers on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from autobot.redis import Redis, open_redis
from tests.support.redis_server import RedisProcess, RedisProcesses, redis_available

if not redis_available():  # pragma: no cover - the CI image has redis-server
    pytest.skip("redis-server is not installed", allow_module_level=True)


@pytest.fixture
def redis_url(shared_redis: RedisProcess) -> str:
    shared_redis.command("FLUSHALL")
    return shared_redis.url


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[RedisProcesses]:
    """Servers of the test's own, for tests that freeze, kill or replicate them."""
    started = RedisProcesses(tmp_path / "redis")
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A decoding client on the shared server."""
    async with open_redis(redis_url, decode_responses=True) as redis:
        yield redis


@pytest.fixture
async def raw_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client that returns ``bytes``, as redis-py does by default."""
    async with open_redis(redis_url) as redis:
        yield redis
