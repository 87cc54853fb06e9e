"""The pytest plugin: AutoBot's test fixtures, registered through the ``pytest11`` entry point.

Installing AutoBot makes pytest load this module (``-p no:autobot`` turns it
off), so a test file needs no ``conftest.py`` to ask for ``fake_llm``,
``redis_server``, ``autobot_app``, ``autobot_client`` or ``autobot_server``.
The async fixtures need pytest-trio (the ``test`` extra) with
``trio_mode = true``, or tests marked ``@pytest.mark.trio``.

Everything a fixture starts it stops at teardown, whatever the test did: the
servers and processes are stopped, their ports closed, and the temporary
directory that holds their data is removed. This module imports the kit only
inside the fixtures, so that loading the plugin costs a pytest run that uses
none of them nothing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import trio

    from ..api import AutoBotApp
    from ._app import AutoBotClient
    from ._fake_llm import FakeLLM
    from ._redis import RedisProcess, RedisProcesses
    from ._server import AutoBotServer

__all__ = [
    "autobot_app",
    "autobot_client",
    "autobot_server",
    "autobot_tmp_path",
    "fake_llm",
    "redis_processes",
    "redis_server",
]

#: The prefix of every directory the fixtures make (with this process's id).
TMP_PREFIX = "autobot-testing-"
# A graceful stop that takes longer than this is a bug in the test or the app.
_TEARDOWN_S = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "autobot: a test that uses the autobot.testing fixtures (informational)"
    )


@pytest.fixture
def autobot_tmp_path() -> Iterator[Path]:
    """A directory of this test's own, removed when the test ends (the fixtures' data).

    Unlike ``tmp_path`` it is not kept for later runs: the kit leaves nothing
    behind. Copy what a failing test should keep (a server's log) out of it.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def fake_llm(nursery: trio.Nursery) -> FakeLLM:
    """A fake LLM server on a free loopback port, with the default :class:`Scenario`.

    Point a provider or an app at ``fake_llm.ollama_url`` or
    ``fake_llm.openai_url``; change its behaviour with ``await
    fake_llm.set_scenario(...)`` or ``fake_llm.script(...)``. It stops with
    the test (pytest-trio's ``nursery``).
    """
    from ._fake_llm import serve_fake_llm

    return await nursery.start(serve_fake_llm)


@pytest.fixture
def redis_processes(autobot_tmp_path: Path) -> Iterator[RedisProcesses]:
    """Starts ``redis-server`` processes, replicas and Sentinels for this test; all stop after.

    Skipped, saying why, when ``redis-server`` is not installed.
    """
    from ._redis import RedisProcesses, redis_available, redis_missing_reason

    if not redis_available():
        pytest.skip(redis_missing_reason())
    processes = RedisProcesses(autobot_tmp_path / "redis")
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
def redis_server(redis_processes: RedisProcesses) -> RedisProcess:
    """A real ``redis-server`` on a free port, with its own data directory; stopped after.

    ``redis_server.url`` for the store (``redis_url=``); ``.freeze()``,
    ``.resume()`` and ``.kill()`` for outages; ``.command("GET", "k")`` to
    look inside. Skipped, saying why, when ``redis-server`` is not installed.
    """
    return redis_processes.redis()


AppFactory = Callable[..., "AutoBotApp"]


@pytest.fixture
def autobot_app(autobot_tmp_path: Path) -> AppFactory:
    """``autobot_app(llm=fake_llm, api_token="t", deadlines={...})``: a new app, not yet serving.

    Keyword arguments are :class:`~autobot.Settings` fields (see
    :func:`autobot.testing.app_settings`); the data directory (the embedded
    store, the files root) is a new one under :func:`autobot_tmp_path` unless
    ``data_dir`` is given. Serve it with ``autobot_client(app)``.
    """
    from ..api import create_app
    from ._app import app_settings

    count = itertools.count(1)

    def make(*, llm: FakeLLM | None = None, **values: Any) -> AutoBotApp:
        data_dir = Path(values.pop("data_dir", autobot_tmp_path / f"app-{next(count)}"))
        return create_app(app_settings(data_dir, llm=llm, **values))

    return make


ClientFactory = Callable[..., Any]


@pytest.fixture
async def autobot_client(autobot_app: AppFactory) -> AsyncIterator[ClientFactory]:
    """``client = await autobot_client(llm=fake_llm)``: an app served on loopback, and its client.

    Takes the keyword arguments of ``autobot_app`` (and builds the app), or an
    app already built: ``await autobot_client(app)``. ``token=`` is sent as the
    bearer token; by default, the app's ``api_token`` when this call set it.
    The server runs in this fixture's nursery until the test ends, then stops
    gracefully: its lifespan closes the services, so what the test stored is
    on disk. Call it again for a second app (another server of a cluster).
    """
    import trio

    from ._app import serve_app

    stops: list[tuple[trio.Event, trio.Event]] = []

    async with trio.open_nursery() as nursery:

        async def start(
            app: Any = None,
            *,
            token: str | None = None,
            graceful_s: float = 0.5,
            **values: Any,
        ) -> AutoBotClient:
            if app is None:
                app = autobot_app(**values)
                token = token if token is not None else values.get("api_token")
            elif values:
                raise TypeError("settings go to autobot_app(...) when an app is given")
            stop, stopped = trio.Event(), trio.Event()

            async def hold(task_status: trio.TaskStatus[AutoBotClient]) -> None:  # noqa: ASYNC114
                try:
                    async with serve_app(app, token=token, graceful_s=graceful_s) as client:
                        task_status.started(client)
                        await stop.wait()
                finally:
                    stopped.set()

            client: AutoBotClient = await nursery.start(hold)
            stops.append((stop, stopped))
            return client

        yield start
        with trio.fail_after(_TEARDOWN_S):
            for stop, stopped in reversed(stops):
                stop.set()
                await stopped.wait()


ServerFactory = Callable[..., Any]


@pytest.fixture
async def autobot_server(autobot_tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """``server = await autobot_server(llm=fake_llm)``: the real server, as a process of its own.

    ``python -m autobot serve`` on a free port, started with
    ``nursery.start()`` and returned once it listens on ``server.url``. Takes
    the keyword arguments of ``autobot_app`` (turned into ``AUTOBOT_*``
    variables for the process; ``environ=`` adds raw ones). For signals
    (``await server.stop()`` is SIGTERM and returns the exit status), crashes
    (``await server.kill()``) and restarts (``autobot_server(data_dir=
    server.data_dir)``). Servers still running when the test ends are stopped
    with SIGTERM, and killed if that takes too long.
    """
    import trio

    from ._app import closed_port_url
    from ._server import run_autobot_server, settings_environ

    count = itertools.count(1)
    started: list[AutoBotServer] = []

    async with trio.open_nursery() as nursery:

        async def start(
            *,
            llm: FakeLLM | None = None,
            environ: dict[str, str] | None = None,
            **values: Any,
        ) -> AutoBotServer:
            data_dir = Path(values.pop("data_dir", autobot_tmp_path / f"server-{next(count)}"))
            if "llm_url" not in values:
                openai = values.get("llm_provider") == "openai"
                values["llm_url"] = llm.url("openai" if openai else "ollama") if llm else None
                values["llm_url"] = values["llm_url"] or closed_port_url()
            env = settings_environ(data_dir=data_dir, **values) | dict(environ or {})
            server: AutoBotServer = await nursery.start(partial(run_autobot_server, env))
            started.append(server)
            return server

        yield start
        for server in reversed(started):
            if server.returncode is None:
                try:
                    await server.stop()
                except trio.TooSlowError:
                    await server.kill()
