"""The service container: everything request handlers use, with one lifetime.

:meth:`Services.run` is started by the app's lifespan with ``nursery.start()``:
it opens the services in order under the ``service.start`` deadline, reports
ready, runs background work in a nursery of its own until :meth:`Services.stop`
is called, then cancels that work and closes the services in reverse order under
``service.stop`` (shielded, so a cancelled lifespan still closes them). Nothing
here knows about HTTP; the API layer reaches services through the app.

The store is kept open by a background task rather than opened once: if the
data directory cannot be used at start-up (or another process holds it), the
server still starts, answers ``/api/health`` with 503 ``down`` saying why, and
retries until the store opens, instead of exiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import trio

from ._config import Settings
from ._deadlines import deadline
from ._errors import AutoBotError, DeadlineExceeded, StorageUnavailable
from ._health import DataDirCheck, HealthCheck
from ._logging import log_fields
from ._metrics import Metrics
from .chat import ChatService
from .llm import LLM, LLMHealthCheck, PromptTemplates, open_llm
from .redis import RedisHealthCheck
from .storage import EmbeddedStore, RedisStore, Store, open_store

__all__ = ["Services"]

log = logging.getLogger("autobot.services")

# How often to try opening the store again after it failed to open.
STORE_RETRY_S = 2.0


class StorageCheck:
    """The data directory is writable and the store is open and writing.

    Critical with the embedded store (it lives in the data directory, so
    nothing works without it); with Redis the data directory only holds files,
    and losing it degrades the service rather than stopping it.
    """

    name = "storage"

    def __init__(self, services: Services) -> None:
        self._services = services
        self._data_dir = DataDirCheck(services.settings.data_dir)

    @property
    def critical(self) -> bool:
        return self._services.settings.redis_url is None

    async def check(self) -> dict[str, Any]:
        store = self._services.store
        if isinstance(store, EmbeddedStore) and store.journal_failure:
            raise StorageUnavailable(f"the journal cannot be written: {store.journal_failure}")
        await self._data_dir.check()
        return {"backend": getattr(store, "backend", "unknown")}


class RedisCheck:
    """The Redis backend's client answers (see :class:`autobot.redis.RedisHealthCheck`)."""

    name = "redis"
    critical = False

    def __init__(self, services: Services) -> None:
        self._services = services

    async def check(self) -> dict[str, Any]:
        store = self._services.store
        assert isinstance(store, RedisStore)
        return await RedisHealthCheck(store.client).check()


class Services:
    """Owns the app's long-lived resources and background tasks."""

    def __init__(
        self, settings: Settings, *, extra_health_checks: Sequence[HealthCheck] = ()
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health_checks: list[HealthCheck] = []
        self._extra_health_checks = list(extra_health_checks)
        self._store: Store | None = None
        self.llm: LLM
        self.prompts: PromptTemplates
        self.store_error = "not opened yet"
        self._stop_requested = trio.Event()
        self.stopped = trio.Event()
        self._long_lived: set[trio.CancelScope] = set()
        self.shutting_down = False

    @property
    def chat(self) -> ChatService:
        """The chat workflow over the current store."""
        return ChatService(self.store, self.llm, self.prompts, self.metrics)

    def breaker_snapshots(self) -> list[dict[str, Any]]:
        """Every dependency's circuit breaker, for metrics."""
        snapshots = [
            {"dependency": "llm", "target": f"{s['provider']} {s['url']}", **s}
            for s in self.llm.breaker_snapshots()
        ]
        if isinstance(self._store, RedisStore):
            snapshots.append(
                {"dependency": "redis", "target": "", **self._store.client.breaker.snapshot()}
            )
        return snapshots

    @property
    def store(self) -> Store:
        """The open store; ``StorageUnavailable`` while it cannot be opened."""
        if self._store is None:
            raise StorageUnavailable(f"storage is not available: {self.store_error}")
        return self._store

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        try:
            await trio.Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            # Still start: health then answers "down" and says why.
            log.error("data dir unusable", extra=log_fields(error=str(error)))
        self.health_checks.append(StorageCheck(self))
        if settings.redis_url:
            self.health_checks.append(RedisCheck(self))

        self.llm = await stack.enter_async_context(
            open_llm(
                settings.llm_provider,
                settings.llm_url,
                settings.llm_model,
                api_key=settings.llm_api_key,
                fallback=settings.llm_fallback,
            )
        )
        self.prompts = PromptTemplates(settings.data_dir)
        self.health_checks.append(LLMHealthCheck(self.llm))
        self.metrics.watch_breakers(self.breaker_snapshots)
        self.health_checks.extend(self._extra_health_checks)

    async def _keep_store_open(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store, retrying while that fails; reports started after the first try."""
        started = False
        while True:
            try:
                async with open_store(self.settings) as store:
                    self._store, self.store_error = store, ""
                    if not started:
                        started = True
                        task_status.started()
                    await trio.sleep_forever()
            except (AutoBotError, OSError) as error:
                self._store = None
                self.store_error = error.message if isinstance(error, AutoBotError) else str(error)
                log.error("store unavailable", extra=log_fields(error=self.store_error))
            if not started:
                started = True
                task_status.started()
            await trio.sleep(STORE_RETRY_S)

    async def run(
        self, *, task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the services, report ready, and keep them until :meth:`stop`."""
        stack = AsyncExitStack()
        try:
            with deadline("service.start"):
                await self._open(stack)
            async with trio.open_nursery() as background:
                with deadline("service.start"):
                    await background.start(self._keep_store_open)
                task_status.started(self)
                await self._stop_requested.wait()
                background.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    with deadline("service.stop"):
                        await stack.aclose()
                except DeadlineExceeded as error:
                    log.error("services did not close in time", extra=log_fields(error=str(error)))
            self.stopped.set()

    @contextmanager
    def long_lived(self) -> Iterator[trio.CancelScope]:
        """Run a stream or WebSocket session so that shutdown cancels it at once.

        Ordinary requests get ``server.shutdown`` seconds to finish after
        SIGTERM; a stream would use all of them and then be cut anyway, so
        streams are cancelled as soon as shutdown begins (their cleanup, such as
        storing a partial answer, still runs).
        """
        with trio.CancelScope() as scope:
            if self.shutting_down:
                scope.cancel()
            self._long_lived.add(scope)
            try:
                yield scope
            finally:
                self._long_lived.discard(scope)

    def begin_shutdown(self) -> None:
        """Cancel every :meth:`long_lived` session, now and from now on."""
        self.shutting_down = True
        for scope in self._long_lived:
            scope.cancel()

    def stop(self) -> None:
        """Ask :meth:`run` to stop its background work and close the services."""
        self._stop_requested.set()
