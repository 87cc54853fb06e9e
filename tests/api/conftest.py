"""Settings for app tests: a private data dir and an LLM URL nothing listens on."""

from __future__ import annotations

import dataclasses
import pathlib
import socket

import pytest

from autobot import Settings
from tests.support.redis_server import RedisProcess
from tests.support.stores import BACKENDS


def closed_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def settings(tmp_path: pathlib.Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        llm_url=f"http://127.0.0.1:{closed_port()}",
    )


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """``settings`` on each backend: embedded, and the shared Redis (flushed)."""
    if request.param == "embedded":
        return settings
    server: RedisProcess = request.getfixturevalue("shared_redis")
    server.command("FLUSHALL")
    return dataclasses.replace(settings, redis_url=server.url)
