"""Real-browser tests of the web page: Debian's Chromium driven by Playwright.

The browser steps are plain synchronous test functions (Playwright's async API
needs asyncio; its sync API runs its own loop in a greenlet). The servers run
as real processes (``run.py``, via :func:`tests.support.process.run_server`),
and the fake LLM beside them, all in one Trio run in a thread of its own
(:class:`TrioThread`): a test changes the fake's scenario, or stops and
starts a server, by calling into that thread.

Every page is watched: a console message of type ``error`` or an uncaught
exception fails the test, unless the test said it expects it
(:meth:`Watched.expect_console`), as a test that stops the server must.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.fake_llm import FakeLLM, Scenario, serve_fake_llm
from tests.support.process import ServerProcess, run_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# First-token budget of the servers here: long enough for any normal answer,
# short enough that the deadline test waits for it.
FIRST_TOKEN_S = 2.0
TOKEN = "page-test-token"


def closed_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrioThread:
    """One Trio run in a daemon thread; :meth:`run` calls an async function in it."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

    def __enter__(self) -> TrioThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Trio thread did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._nursery is not None
        trio.from_thread.run_sync(self._nursery.cancel_scope.cancel, trio_token=self._token)
        self._thread.join(20)

    def run(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def start(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``nursery.start(afn, *args)`` in the thread's nursery; what the task started with."""
        assert self._nursery is not None
        return self.run(self._nursery.start, afn, *args)


@dataclass
class Server:
    """One ``run.py`` process; :meth:`stop` kills it, :meth:`restart` runs it again alike."""

    trio_thread: TrioThread
    environ: dict[str, str]
    data_dir: Path
    process: ServerProcess | None = None
    _scope: trio.CancelScope | None = None
    _stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        assert self.process is not None
        return self.process.url

    async def _hold(  # noqa: ASYNC114 - started only by Server.start
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with run_server(self.environ) as self.process:
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._stopped.set()

    def start(self) -> Server:
        self.trio_thread.start(self._hold)
        return self

    async def _stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    def stop(self) -> None:
        self.trio_thread.run(self._stop)

    def restart(self) -> None:
        """Run the server again on the same port and data directory."""
        port = self.url.rsplit(":", 1)[1]
        self.environ = {**self.environ, "AUTOBOT_PORT": port}
        self.start()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@dataclass
class Stack:
    """The fake LLM and a server answering through it."""

    trio_thread: TrioThread
    fake: FakeLLM
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def set_scenario(self, scenario: Scenario) -> None:
        self.trio_thread.run(self.fake.set_scenario, scenario)


@pytest.fixture(scope="session")
def trio_thread() -> Iterator[TrioThread]:
    with TrioThread() as thread:
        yield thread


@pytest.fixture(scope="session")
def fake(trio_thread: TrioThread) -> FakeLLM:
    return trio_thread.start(serve_fake_llm)


def _environ(data_dir: Path, llm_url: str, **extra: str) -> dict[str, str]:
    return {
        "AUTOBOT_DATA_DIR": str(data_dir),
        "AUTOBOT_LLM_URL": llm_url,
        "AUTOBOT_DEADLINE_LLM_FIRST_TOKEN": str(FIRST_TOKEN_S),
        **extra,
    }


def _server(trio_thread: TrioThread, data_dir: Path, llm_url: str, **extra: str) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    environ = _environ(data_dir, llm_url, **extra)
    return Server(trio_thread, environ, data_dir).start()


@pytest.fixture(scope="session")
def stack(
    trio_thread: TrioThread, fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The server most tests share (no token); each test makes its own chats."""
    server = _server(trio_thread, tmp_path_factory.mktemp("web") / "data", fake.ollama_url)
    yield Stack(trio_thread, fake, server)
    server.stop()


@pytest.fixture
def scenario(stack: Stack) -> Iterator[Callable[[Scenario], None]]:
    """Set the fake LLM's scenario for this test; the default one is back afterwards."""
    yield stack.set_scenario
    stack.set_scenario(Scenario())


@pytest.fixture
def fresh_server(
    trio_thread: TrioThread, fake: FakeLLM, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """Start a server of this test's own: ``fresh_server(llm_url=..., AUTOBOT_X=...)``."""
    started: list[Server] = []

    def start(llm_url: str | None = None, **extra: str) -> Server:
        data_dir = tmp_path / f"data{len(started)}"
        server = _server(trio_thread, data_dir, llm_url or fake.ollama_url, **extra)
        started.append(server)
        return server

    yield start
    for server in started:
        if server._scope is not None and not server._stopped.is_set():
            server.stop()


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (python3 dev.py test installs it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # No GPU, no first-run UI, nothing from the network but our servers.
            args=["--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page and what went wrong in it: console errors and uncaught exceptions."""

    page: Any
    problems: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect_console(self, pattern: str) -> None:
        """A console error matching ``pattern`` is expected (and does not fail the test)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(e.search(p) for e in self.expected)]


def _open_page(browser: Any, viewport: dict[str, int]) -> Iterator[Watched]:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(10_000)
    page = context.new_page()
    watched = Watched(page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.problems.append(f"console: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.problems.append(f"page error: {error}"))
    try:
        yield watched
        assert watched.unexpected() == [], "the page reported errors"
    finally:
        context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A fresh browser context at a laptop's size."""
    yield from _open_page(browser, {"width": 1280, "height": 800})


@pytest.fixture
def second_tab(browser: Any) -> Iterator[Watched]:
    """Another browser context (another device) at a laptop's size."""
    yield from _open_page(browser, {"width": 1280, "height": 800})


@pytest.fixture
def phone(browser: Any) -> Iterator[Watched]:
    """A fresh browser context at a phone's width (360 x 740)."""
    yield from _open_page(browser, {"width": 360, "height": 740})


__all__ = ["FIRST_TOKEN_S", "TOKEN", "Server", "Stack", "Watched", "closed_port"]
