"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
import trio

from autobot import DeadlineTable, install_deadlines
from tests.support.fake_llm import FakeLLM, serve_fake_llm
from tests.support.redis_server import RedisProcess, RedisProcesses


@pytest.fixture(autouse=True)
def fresh_deadlines() -> Iterator[DeadlineTable]:
    """Every test starts with the default budgets and empty latency statistics."""
    table = DeadlineTable()
    previous = install_deadlines(table)
    yield table
    install_deadlines(previous)


@pytest.fixture
def set_deadlines() -> Callable[[Mapping[str, float]], DeadlineTable]:
    """Install a table with some budgets overridden, e.g. ``set_deadlines({"llm.idle": 0.2})``."""

    def install(overrides: Mapping[str, float]) -> DeadlineTable:
        table = DeadlineTable(overrides)
        install_deadlines(table)
        return table

    return install


@pytest.fixture
async def fake_llm(nursery: trio.Nursery) -> FakeLLM:
    """A fake LLM on a free loopback port (``tests/support/fake_llm.py``), default scenario."""
    return await nursery.start(serve_fake_llm)


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One ``redis-server`` for the tests that only run commands; flush it before use.

    Tests that freeze, kill or replicate a server start their own.
    """
    processes = RedisProcesses(tmp_path_factory.mktemp("shared-redis"))
    try:
        yield processes.redis()
    finally:
        processes.stop_all()
