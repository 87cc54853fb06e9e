"""Fixtures shared by the whole suite.

``fake_llm``, ``redis_server``, ``autobot_app``, ``autobot_client`` and
``autobot_server`` come from the test kit's pytest plugin (``autobot.testing``,
loaded through the ``pytest11`` entry point of the installed package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from autobot import DeadlineTable, install_deadlines
from autobot.testing import RedisProcess, RedisProcesses


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


def pytest_configure(config: pytest.Config) -> None:
    # A checkout whose environment predates the entry point (not reinstalled
    # since) still gets the kit's fixtures; ``-p no:autobot`` still turns them off.
    manager = config.pluginmanager
    if not manager.has_plugin("autobot") and not manager.is_blocked("autobot"):
        from autobot.testing import _plugin

        manager.register(_plugin, "autobot")
