"""The service container: everything request handlers use, with one lifetime.

:meth:`Services.run` is started by the app's lifespan with ``nursery.start()``:
it opens the services in order under the ``service.start`` deadline, reports
ready, runs background work under a :class:`~autobot._supervisor.Supervisor`
until :meth:`Services.stop` is called, then cancels that work and closes the
services in reverse order under ``service.stop`` (shielded, so a cancelled
lifespan still closes them). Nothing here knows about HTTP, nor which storage
backend runs: the store reports its own health checks and breakers.

Supervised here: ``health`` (the nursery health probes run in), ``storage``
(the store keeper, below) and, through the keeper, the store's own tasks, and
``operations`` (the long-running operations' runner, stopped first at shutdown
so that running operations checkpoint while the store is still open) and
``agents`` (the message bus's sweeper, which hands back messages taken for
receivers that went away) and ``knowledge`` (builds this process's keyword
index and keeps it in step with other processes). A
service that fails on an outside fault is restarted with backoff and reported
in ``/api/health``; a programming error in any of them ends :meth:`run` with
that error (after setting :attr:`Services.crashed`), so the server can exit
rather than serve half alive.

The store is kept open by the ``storage`` service rather than opened once: if
the data directory cannot be used at start-up (or another process holds it),
the server still starts, answers ``/api/health`` with 503 ``down`` saying why,
and the supervisor retries until the store opens, instead of exiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Any, NoReturn

import trio

from ._config import Settings
from ._deadlines import deadline
from ._errors import DeadlineExceeded, ServiceUnavailable, StorageUnavailable
from ._health import (
    DataDirCheck,
    HealthCheck,
    HealthProbes,
    HealthReport,
    WatchedCheck,
    breaker_fingerprint,
    describe_error,
)
from ._logging import log_fields
from ._metrics import Metrics
from ._supervisor import RestartPolicy, Supervisor, open_supervisor
from .agents import AgentBus
from .chat import ChatService, DetachedAnswers
from .knowledge import KnowledgeBase
from .llm import LLM, LLMHealthCheck, PromptTemplates, open_llm
from .operations import OperationRunner
from .storage import Store, open_store, store_is_critical

__all__ = ["Services"]

log = logging.getLogger("autobot.services")

# Opening the store again after it failed: soon at first (a lock just freed),
# then every couple of seconds at most.
STORE_RESTARTS = RestartPolicy(first_s=0.1, max_s=2.0)


class StorageCheck:
    """The data directory is writable and the store is open.

    Critical when the store is (see :func:`~autobot.storage.store_is_critical`).
    The store's own checks (its journal, its Redis) are entries of their own.
    """

    name = "storage"

    def __init__(self, services: Services) -> None:
        self._services = services
        self._data_dir = DataDirCheck(services.settings.data_dir)
        self.critical = store_is_critical(services.settings)

    async def check(self) -> dict[str, Any]:
        store = self._services.store
        await self._data_dir.check()
        return {"backend": store.backend}


class CrashedCheck:
    """What health says once a programming error stopped the services."""

    name = "services"
    critical = True

    def __init__(self, error: BaseException) -> None:
        self._error = error

    async def check(self) -> None:
        raise ServiceUnavailable(f"the services crashed: {describe_error(self._error)}")


class Services:
    """Owns the app's long-lived resources and background tasks."""

    def __init__(
        self, settings: Settings, *, extra_health_checks: Sequence[HealthCheck] = ()
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = HealthProbes()
        self._extra_health_checks = list(extra_health_checks)
        self._storage_check = StorageCheck(self)
        self._llm_check: HealthCheck | None = None
        self._store: Store | None = None
        self.llm: LLM
        self.prompts: PromptTemplates
        self.store_error = "not opened yet"
        self.supervisor: Supervisor | None = None
        self.fatal_error: BaseException | None = None
        self.crashed = trio.Event()
        self._stop_requested = trio.Event()
        self.stopped = trio.Event()
        self._long_lived: set[trio.CancelScope] = set()
        self.shutting_down = False
        self.operations = OperationRunner(
            settings, lambda: self.store, metrics=self.metrics, knowledge=lambda: self.knowledge
        )
        self.metrics.watch_operations(self.operations.counts)
        self.agents = AgentBus(lambda: self.store)
        self.metrics.watch_agents(self.agents.counts)
        #: Answers asked for with ``"detach": true``, run in the lifespan.
        self.detached = DetachedAnswers()
        self.knowledge = KnowledgeBase(
            settings.data_dir,
            lambda: self.store,
            embed_model=settings.embed_model,
            embeddings=lambda: self.llm,
        )

    @property
    def chat(self) -> ChatService:
        """The chat workflow over the current store."""
        return ChatService(self.store, self.llm, self.prompts, self.metrics)

    @property
    def store(self) -> Store:
        """The open store; ``StorageUnavailable`` while it cannot be opened."""
        if self._store is None:
            raise StorageUnavailable(f"storage is not available: {self.store_error}")
        return self._store

    def health_checks(self) -> list[HealthCheck]:
        """The checks ``/api/health`` runs now: they follow the store as it comes and goes."""
        if self.fatal_error is not None:
            return [self._storage_check, CrashedCheck(self.fatal_error)]
        checks: list[HealthCheck] = [self._storage_check]
        if self._store is not None:
            checks.extend(self._store.health_checks())
        if self._llm_check is not None:
            checks.append(self._llm_check)
        if self.supervisor is not None:
            checks.append(self.supervisor.health_check)
        checks.append(self.knowledge.health_check)
        checks.extend(self._extra_health_checks)
        return checks

    async def report_health(self) -> HealthReport:
        """The ``/api/health`` report (reused results, one probe per check in flight)."""
        return await self.health.report(self.health_checks())

    def breaker_snapshots(self) -> list[dict[str, Any]]:
        """Every dependency's circuit breaker, for metrics."""
        snapshots = [
            {"dependency": "llm", "target": f"{s['provider']} {s['url']}", **s}
            for s in self.llm.breaker_snapshots()
        ]
        if self._store is not None:
            snapshots.extend(self._store.breakers())
        return snapshots

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        try:
            await trio.Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            # Still start: health then answers "down" and says why.
            log.error("data dir unusable", extra=log_fields(error=str(error)))
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
        self._llm_check = WatchedCheck(
            LLMHealthCheck(self.llm), breaker_fingerprint(self.llm.breaker_snapshots)
        )
        self.metrics.watch_breakers(self.breaker_snapshots)

    async def _keep_store_open(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store and hold it open; the supervisor runs this again when it fails."""
        try:
            async with open_store(self.settings, supervisor=self.supervisor) as store:
                self._store, self.store_error = store, ""
                task_status.started()
                await trio.sleep_forever()
        except Exception as error:
            self.store_error = describe_error(error)
            raise
        finally:
            self._store = None
            self.store_error = self.store_error or "the store is closed"

    async def run(
        self, *, task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the services, report ready, and keep them until :meth:`stop`.

        Raises the programming error that crashed a supervised service (in an
        ``ExceptionGroup``), after setting :attr:`crashed`.
        """
        stack = AsyncExitStack()
        try:
            with deadline("service.start"):
                await self._open(stack)
            async with open_supervisor() as supervisor:
                self.supervisor = supervisor
                self.metrics.watch_supervision(
                    supervisor.services, lambda: supervisor.dropped, self.health.probe_counts
                )
                with deadline("service.start"):
                    await supervisor.start("health", self.health.run)
                    await supervisor.start(
                        "storage",
                        self._keep_store_open,
                        critical=store_is_critical(self.settings),
                        policy=STORE_RESTARTS,
                    )
                    await supervisor.start("operations", self.operations.run)
                    await supervisor.start("agents", self.agents.run)
                    await supervisor.start("knowledge", self.knowledge.run)
                    await supervisor.start("answers", self.detached.run)
                task_status.started(self)
                await self._stop_requested.wait()
                # Before the store closes: running operations save their checkpoints.
                with trio.CancelScope(shield=True):
                    try:
                        with deadline("service.stop"):
                            await self.operations.shutdown()
                    except DeadlineExceeded as error:
                        log.error(
                            "operations did not stop in time",
                            extra=log_fields(error=str(error)),
                        )
        except Exception:
            if self.supervisor is not None and self.supervisor.fatal_error is not None:
                self.fatal_error = self.supervisor.fatal_error
                self.crashed.set()
            raise
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

    async def raise_on_crash(self) -> NoReturn:
        """Wait until a programming error crashed the services, then raise it.

        For the process's owner to run beside the server (Hypercorn's lifespan
        only logs an error that leaves the app after start-up): raising it in
        the server's nursery ends the process non-zero instead of leaving it
        serving without its services. Cancel it when the server stops.
        """
        await self.crashed.wait()
        assert self.fatal_error is not None
        raise self.fatal_error

    def stop(self) -> None:
        """Ask :meth:`run` to stop its background work and close the services."""
        self._stop_requested.set()
