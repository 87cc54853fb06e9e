"""Supervised background services: restarted after outside faults, fatal on bugs.

A long-lived task that dies (the journal writer, the Redis pub/sub relay, the
store keeper) takes a part of the server with it while the rest goes on
answering: a zombie that says it is healthy and fails every write. The
:class:`Supervisor` runs each such task in the nursery it was given, structured
like any Trio service (started with ``nursery.start``, ready when the task says
so, stopped when the nursery is), and decides what a failure means:

* **An outside fault** (:data:`RECOVERABLE`: an ``AutoBotError`` such as Redis
  being down or a deadline, an ``OSError`` such as a full disk, a broken
  stream) is logged, reported in ``/api/health`` and the metrics, and the task
  is started again after an exponential, jittered delay (:class:`RestartPolicy`).
  The fault is in the world and may go away by itself.
* **A programming error** (anything else: ``TypeError``, ``KeyError``,
  ``AssertionError`` ...) is logged with its traceback and propagated: the
  supervisor's nursery fails, the services close and the server exits
  non-zero. Wrong code does not get better by running again, and a half-alive
  server is worse than one that is visibly down and restarted by its manager.
* **A bad payload from outside** (a non-JSON pub/sub message, a journal record
  of an unknown kind) is neither: the task drops it, tells :meth:`Supervisor.drop`
  (logged and counted) and goes on.

Example::

    async with open_supervisor() as supervisor:
        await supervisor.start("storage.journal", journal.run, critical=True)
        ...  # the writer runs, restarted on OSError, until the block ends
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ._deadlines import deadline
from ._errors import AutoBotError, DeadlineExceeded
from ._health import CheckFailed, describe_error
from ._logging import log_fields
from ._nursery import background_nursery

__all__ = [
    "RECOVERABLE",
    "RestartPolicy",
    "Service",
    "ServiceState",
    "ServicesCheck",
    "Supervisor",
    "is_recoverable",
    "open_supervisor",
    "using_supervisor",
]

log = logging.getLogger("autobot.supervisor")

#: Failures that come from outside the code: the task is restarted after them.
RECOVERABLE: tuple[type[BaseException], ...] = (
    AutoBotError,
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
)

# A run that stayed ready this long before failing was a success: the next
# failure starts the delays from the beginning again.
_STABLE_S = 10.0
_FIRST_DELAY_S = 0.1
_MAX_DELAY_S = 5.0
_MAX_DOUBLINGS = 32  # past this the ceiling is max_s anyway; keeps 2**n small
# Each kind of dropped payload is logged this many times, then every _LOG_EVERY-th.
_LOG_FIRST_DROPS = 10
_LOG_EVERY = 1000


def is_recoverable(error: BaseException) -> bool:
    """True for :data:`RECOVERABLE` errors, and for groups made only of them."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_recoverable(inner) for inner in error.exceptions)
    return isinstance(error, RECOVERABLE)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How long to wait before restarting a task that failed.

    The n-th failure in a row waits between half and all of
    ``min(max_s, first_s * 2 ** (n - 1))`` ("equal jitter": processes that
    failed together, say when Redis restarted, do not come back in lock-step).
    A run that was ready for ``stable_s`` resets the count.
    """

    first_s: float = _FIRST_DELAY_S
    max_s: float = _MAX_DELAY_S
    stable_s: float = _STABLE_S

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError("need 0 < first_s <= max_s")

    def delay(self, failures: int, fraction: float) -> float:
        """The wait after ``failures`` failures in a row; ``fraction`` in [0, 1) is the jitter."""
        doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
        ceiling = min(self.max_s, self.first_s * 2**doublings)
        return ceiling / 2 + fraction * ceiling / 2


DEFAULT_POLICY = RestartPolicy()


@dataclass(slots=True)
class ServiceState:
    """What the supervisor knows of one service, for health and metrics.

    ``status`` is ``starting`` (first run, not ready yet), ``up`` (ready),
    ``restarting`` (failed; waiting to run again, or running but not ready
    again yet), ``stopped`` (not meant to run now) or ``crashed`` (a
    programming error: the server is stopping). ``error`` is the last
    failure while the service is down; ``restarts`` counts restarts over the
    process's life, also across a stop and a new start under the same name.
    """

    name: str
    critical: bool = False
    status: str = "starting"
    restarts: int = 0
    error: str | None = None

    @property
    def down(self) -> bool:
        return self.status in ("restarting", "crashed")

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"status": self.status, "restarts": self.restarts}
        if self.critical:
            entry["critical"] = True
        if self.error is not None:
            entry["error"] = self.error
        return entry


class Service:
    """A started service: its :class:`ServiceState` and :meth:`stop`."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self._scope = trio.CancelScope()
        self._finished = trio.Event()

    async def stop(self) -> None:
        """Cancel the service and wait until it has ended.

        Shielded and bounded by ``service.stop``: safe to call from cleanup
        code that is itself being cancelled.
        """
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            try:
                with deadline("service.stop"):
                    await self._finished.wait()
            except DeadlineExceeded as error:
                log.error(
                    "service did not stop in time",
                    extra=log_fields(service=self.state.name, error=str(error)),
                )


class _Readiness:
    """The ``task_status`` a supervised run gets: ``started()`` means "ready"."""

    __slots__ = ("_on_ready", "ready_at")

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.ready_at: float | None = None

    def started(self, value: object = None) -> None:
        if self.ready_at is not None:
            raise RuntimeError("started() called twice in one run")
        self.ready_at = trio.current_time()
        self._on_ready()


ServiceRun = Callable[..., Awaitable[object]]


class Supervisor:
    """Runs services in ``nursery``; see the module docstring. Open with :func:`open_supervisor`.

    ``random_fraction`` supplies the jitter (tests pass a constant).
    """

    def __init__(
        self, nursery: trio.Nursery, *, random_fraction: Callable[[], float] = random.random
    ) -> None:
        self._nursery = nursery
        self._random = random_fraction
        self._states: dict[str, ServiceState] = {}
        self._running: set[str] = set()
        self._reported: set[int] = set()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.fatal_error: BaseException | None = None
        self.health_check = ServicesCheck(self)

    def services(self) -> list[ServiceState]:
        """Every service started so far (stopped ones too), in start order."""
        return list(self._states.values())

    async def start(
        self,
        name: str,
        run: ServiceRun,
        *,
        critical: bool = False,
        policy: RestartPolicy = DEFAULT_POLICY,
    ) -> Service:
        """Start ``run(task_status=...)`` as service ``name``; return once it is ready.

        ``run`` is written like any task for ``nursery.start``: it calls
        ``task_status.started()`` when ready and runs until cancelled. This
        returns when the first run is ready, or when it failed with a
        recoverable error (the service then keeps being restarted in the
        background and is reported down), so a dependency that is out at
        start-up does not stop the server from starting. A programming error
        in the first run is raised here. ``critical``: while it is down,
        ``/api/health`` says ``down`` rather than ``degraded``.
        """
        if name in self._running:
            raise ValueError(f"service {name!r} is already running")
        state = self._states.setdefault(name, ServiceState(name))
        state.critical, state.status, state.error = critical, "starting", None
        self._running.add(name)
        try:
            service: Service = await self._nursery.start(self._supervise, state, run, policy)
        except BaseException:
            self._running.discard(name)
            raise
        return service

    @asynccontextmanager
    async def running(
        self,
        name: str,
        run: ServiceRun,
        *,
        critical: bool = False,
        policy: RestartPolicy = DEFAULT_POLICY,
    ) -> AsyncIterator[Service]:
        """:meth:`start` the service for the block; :meth:`Service.stop` it when the block ends.

        For a service that belongs to a resource (the journal writer of a
        store): the service ends before the resource is closed.
        """
        service = await self.start(name, run, critical=critical, policy=policy)
        try:
            yield service
        finally:
            await service.stop()  # noqa: ASYNC102 - stop() shields itself, under service.stop

    def drop(self, source: str, reason: str, **detail: Any) -> None:
        """Count and log a bad payload from outside that ``source`` dropped.

        Never raises. The first few drops of each kind are logged, then one in
        a thousand, so a flood of garbage cannot flood the log as well.
        """
        key = (source, reason)
        self.dropped[key] += 1
        count = self.dropped[key]
        if count <= _LOG_FIRST_DROPS or count % _LOG_EVERY == 0:
            log.warning(
                "bad payload dropped",
                extra=log_fields(source=source, reason=reason, count=count, **detail),
            )

    # -- the supervising task ---------------------------------------------------------

    async def _supervise(  # noqa: ASYNC114 - started only by start() above
        self,
        state: ServiceState,
        run: ServiceRun,
        policy: RestartPolicy,
        *,
        task_status: trio.TaskStatus[Service],
    ) -> None:
        service = Service(state)
        reported = False

        def report_start() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started(service)

        def ready() -> None:
            state.status, state.error = "up", None
            report_start()

        failures = 0
        try:
            with service._scope:
                while True:
                    readiness = _Readiness(ready)
                    try:
                        await run(task_status=readiness)
                    except Exception as error:
                        if not is_recoverable(error):
                            self._crash(state, error)
                            raise
                        description = describe_error(error)
                    else:
                        description = "ended by itself"
                    ready_at = readiness.ready_at
                    if ready_at is not None and trio.current_time() - ready_at >= policy.stable_s:
                        failures = 0
                    failures += 1
                    delay = policy.delay(failures, self._random())
                    state.status, state.error = "restarting", description
                    log.warning(
                        "service failed; restarting",
                        extra=log_fields(
                            service=state.name,
                            error=description,
                            restarts=state.restarts,
                            retry_in_s=round(delay, 3),
                        ),
                    )
                    report_start()
                    await trio.sleep(delay)
                    state.restarts += 1
        finally:
            if state.status != "crashed":
                state.status = "stopped"
            self._running.discard(state.name)
            service._finished.set()

    def _crash(self, state: ServiceState, error: BaseException) -> None:
        state.status, state.error = "crashed", describe_error(error)
        leaves = [id(leaf) for leaf in _leaves(error)]
        if any(leaf in self._reported for leaf in leaves):
            return  # already reported by the service it came from
        self._reported.update(leaves)
        if self.fatal_error is None:
            self.fatal_error = error
        log.critical(
            "service crashed: a programming error; the server stops",
            extra=log_fields(service=state.name, error=state.error),
            exc_info=error,
        )


class ServicesCheck:
    """The ``services`` entry of ``/api/health``: every supervised service's state.

    Fails while any service is down (restarting or crashed), naming each with
    its error and restart count; critical when one of those is critical (the
    embedded journal writer) or crashed.
    """

    name = "services"

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    @property
    def critical(self) -> bool:
        return any(
            state.down and (state.critical or state.status == "crashed")
            for state in self._supervisor.services()
        )

    async def check(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        states = self._supervisor.services()
        entries = {state.name: state.to_json() for state in states}
        down = [state for state in states if state.down]
        if down:
            raise CheckFailed(
                "; ".join(
                    f"{state.name} {state.status} after {state.error} ({state.restarts} restarts)"
                    for state in down
                ),
                services=entries,
            )
        return {"services": entries}


@asynccontextmanager
async def open_supervisor(
    *, random_fraction: Callable[[], float] = random.random
) -> AsyncIterator[Supervisor]:
    """A :class:`Supervisor` whose services end with the block.

    An exception from the block passes through unwrapped; a programming error
    in a service cancels the block and comes out in an ``ExceptionGroup``.
    """
    async with background_nursery() as nursery:
        yield Supervisor(nursery, random_fraction=random_fraction)


@asynccontextmanager
async def using_supervisor(supervisor: Supervisor | None) -> AsyncIterator[Supervisor]:
    """``supervisor`` itself, or (when None) one of the block's own.

    Lets a resource such as a store be opened on its own (the export command,
    tests) and under the app's supervisor alike.
    """
    if supervisor is not None:
        yield supervisor
    else:
        async with open_supervisor() as own:
            yield own
