"""Health checks: cheap to poll under load, each bounded, the whole answer on time.

A check is any object with a ``name``, a ``critical`` flag and an async
``check()`` that returns quietly (optionally with extra fields to report) or
raises. :class:`HealthProbes` runs them for ``/api/health`` the way the
contract asks of a load balancer's target:

* **Reused for up to a second.** A check's result is served again for
  :data:`REUSE_S`; every entry carries ``age_ms``, how old its result is
  (0 when the request waited for a fresh probe). A check may also offer a
  cheap ``fingerprint()`` (:class:`WatchedCheck`: its dependency's circuit
  breaker counters); a result is not reused once that changed, so a failure
  that requests just ran into shows in the next health answer, not a second
  later.
* **Refreshed ahead.** A request served a result older than
  :data:`REFRESH_S` starts the next probe in the background, so under steady
  polling a fresh result is ready before the old one may no longer be served,
  and no request waits for a probe at all.
* **Single-flight.** At most one probe per check is in flight; every request
  that needs a fresh result while one runs waits for that one. Two hundred
  concurrent requests cost one probe per dependency, not two hundred.
* **Nobody queues behind a hung dependency.** A request waits for the probe
  of a check that can come back by itself (Redis, the LLM) only when its last
  result was good and nothing has failed since, and then only until that probe
  has run ``health.wait``, counted from the probe's start: once a probe has
  gone unanswered that long, the check is reported failing at once, while
  the probe goes on for later requests. A check whose last probe failed, or
  whose dependency's calls failed since (its fingerprint changed), is reported
  failing at once while it is probed again. A critical check is waited for up
  to ``health.check``: "down" takes a dependency out of service, so it is not
  said of one that is merely slow.
* **Bounded twice.** A probe runs under ``health.check`` in a nursery owned by
  the services (:meth:`HealthProbes.run`), not by the request that started it,
  so a request that is cancelled does not cancel the probe others wait for. A
  request waits for a probe at most its own ``health.check``, and the whole
  answer is under ``health``: since ``health.check`` is shorter (the settings
  loader enforces it), a hung dependency costs one failed check and never the
  answer, whoever started the probe and when.

The report's status follows the contract: ``ok``; ``degraded`` when a
non-critical check failed (Redis, the LLM: dependencies that come back by
themselves); ``down`` when a critical one failed (the process cannot serve).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from ._deadlines import current_deadlines, deadline
from ._errors import AutoBotError, DeadlineExceeded

__all__ = [
    "REFRESH_S",
    "REUSE_S",
    "CheckFailed",
    "DataDirCheck",
    "HealthCheck",
    "HealthProbes",
    "HealthReport",
    "WatchedCheck",
    "breaker_fingerprint",
    "describe_error",
    "run_health_checks",
]

#: How long a check's result may be served again (the API contract's "up to 1 s").
REUSE_S = 1.0
#: A result this old is still served, and a probe for the next one starts.
REFRESH_S = REUSE_S / 2


class HealthCheck(Protocol):
    """What :class:`HealthProbes` needs of a check."""

    name: str
    critical: bool

    async def check(self) -> dict[str, Any] | None:
        """Return (extra fields to report, or None) if healthy; raise if not."""
        ...


class CheckFailed(Exception):
    """Raised by a check that failed and has more to say than the error (``fields``)."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class WatchedCheck:
    """``check``, with a ``fingerprint()`` that tells when a reused result went stale."""

    def __init__(self, check: HealthCheck, fingerprint: Callable[[], object]) -> None:
        self._check = check
        self.fingerprint = fingerprint

    @property
    def name(self) -> str:
        return self._check.name

    @property
    def critical(self) -> bool:
        return self._check.critical

    async def check(self) -> dict[str, Any] | None:
        return await self._check.check()


def breaker_fingerprint(snapshots: Callable[[], list[dict[str, Any]]]) -> Callable[[], object]:
    """A fingerprint that changes whenever one of the breakers ``snapshots()`` lists
    changes state or counts a failure (not a rejection: an open circuit stays put)."""
    return lambda: tuple((s["state"], s["total_failures"]) for s in snapshots())


def _fingerprint(check: HealthCheck) -> object:
    fingerprint = getattr(check, "fingerprint", None)
    return None if fingerprint is None else fingerprint()


@dataclass(slots=True)
class HealthReport:
    status: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 503 if self.status == "down" else 200

    def to_body(self) -> dict[str, Any]:
        return {"status": self.status, "checks": self.checks}


def describe_error(error: BaseException) -> str:
    """A one-line account of ``error`` for a health entry or a log line."""
    if isinstance(error, AutoBotError):
        return error.message
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return describe_error(error.exceptions[0])
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _known_trouble(result: _Result | None, fingerprint: object) -> str | None:
    """Why a check is known to be in trouble without waiting for its next probe, or None."""
    if result is None:
        return None
    if not result.fields["ok"]:
        return f"{result.fields['error']} (being probed again)"
    if result.fingerprint != fingerprint:
        return "calls to it failed since its last probe (being probed again)"
    return None


def _wait_scope(check: HealthCheck) -> str:
    """The scope bounding a wait for ``check``'s probe (never past the probe's own end)."""
    table = current_deadlines()
    if check.critical or table.budget("health.check") <= table.budget("health.wait"):
        return "health.check"
    return "health.wait"


def _budget_message(scope: str, error: DeadlineExceeded) -> str:
    """What a request that stopped waiting for a probe reports; the probe's own
    expiry (``health.check``) reads as it always does."""
    budget = current_deadlines().budget(scope)
    if scope == "health.wait":
        return f"no answer within {budget:g} s ('health.wait'); the probe goes on"
    return DeadlineExceeded(scope, budget).message


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass(slots=True)
class _Result:
    fields: dict[str, Any]  # ok, error?, the check's own fields, latency_ms
    critical: bool
    finished_at: float
    fingerprint: object  # the check's fingerprint when the probe ended


@dataclass(slots=True)
class _Entry:
    result: _Result | None = None
    running: trio.Event | None = None  # set when the probe in flight ends
    started_at: float = 0.0  # when the probe in flight started
    probes: int = 0


class HealthProbes:
    """Cached, single-flight health probes (see the module docstring).

    Start :meth:`run` in the services' nursery; :meth:`report` then runs its
    probes there. Without it (a one-off report, or after the services
    stopped) each report runs its probes in a nursery of its own.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._nursery: trio.Nursery | None = None

    def probe_counts(self) -> dict[str, int]:
        """Probes started so far, by check name (for metrics and tests)."""
        return {name: entry.probes for name, entry in self._entries.items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery probes run in; runs until cancelled (which cancels the probes)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def report(self, checks: Sequence[HealthCheck]) -> HealthReport:
        """The health of ``checks``, answered within ``health``.

        Raises ``DeadlineExceeded`` for ``health`` only if that budget is
        not longer than ``health.check`` (the settings loader refuses that).
        """
        if self._nursery is not None:
            return await self._report(checks, self._nursery)
        async with trio.open_nursery() as nursery:
            report = await self._report(checks, nursery)
            nursery.cancel_scope.cancel()  # probes outliving their waiters have no one to tell
        return report

    async def _report(self, checks: Sequence[HealthCheck], nursery: trio.Nursery) -> HealthReport:
        results: dict[str, tuple[dict[str, Any], bool]] = {}
        pending = []
        for check in checks:
            reused = self._reused(check, nursery)
            if reused is None:
                pending.append(check)
            else:
                results[check.name] = reused
        # Under steady polling every result is reused: no task, no scope, one checkpoint.
        if not pending:
            await trio.lowlevel.checkpoint()
        else:
            with deadline("health"):
                async with trio.open_nursery() as waits:
                    for check in pending:
                        waits.start_soon(self._collect, check, nursery, results)
        failed = [critical for fields, critical in results.values() if not fields["ok"]]
        if any(failed):
            status = "down"
        elif failed:
            status = "degraded"
        else:
            status = "ok"
        return HealthReport(status, {check.name: results[check.name][0] for check in checks})

    async def _collect(
        self,
        check: HealthCheck,
        nursery: trio.Nursery,
        results: dict[str, tuple[dict[str, Any], bool]],
    ) -> None:
        """Put ``check``'s entry in ``results``: reused, from the probe in flight, or fresh."""
        reused = self._reused(check, nursery)
        if reused is not None:
            await trio.lowlevel.checkpoint()
            results[check.name] = reused
            return
        entry = self._entries[check.name]
        asked = trio.current_time()
        result = entry.result
        if entry.running is None:
            self._start_probe(check, entry, nursery)
        running = entry.running
        assert running is not None
        trouble = None if check.critical else _known_trouble(result, _fingerprint(check))
        if trouble is not None:
            # Known to be failing, or calls to it failed since it was last probed:
            # say so now, and let the probe find out whether it is back.
            await trio.lowlevel.checkpoint()
            known = {
                "ok": False,
                "error": trouble,
                "latency_ms": _ms(trio.current_time() - entry.started_at),
                "age_ms": 0.0,
            }
            results[check.name] = (known, check.critical)
            return
        scope = _wait_scope(check)
        left = current_deadlines().budget(scope) - (asked - entry.started_at)
        try:
            if left <= 0:
                raise DeadlineExceeded(scope, current_deadlines().budget(scope))
            waiting = (
                deadline("health.check", left)
                if scope == "health.check"
                else deadline("health.wait", left)
            )
            with waiting:
                await running.wait()
        except DeadlineExceeded as error:
            # The probe goes on (bounded by its own health.check) for later requests.
            waited = {
                "ok": False,
                "error": _budget_message(scope, error),
                "latency_ms": _ms(trio.current_time() - entry.started_at),
                "age_ms": 0.0,
            }
            results[check.name] = (waited, check.critical)
            return
        result = entry.result
        if result is None or result.finished_at < asked:
            cancelled = {"ok": False, "error": "the probe was cancelled", "latency_ms": 0.0}
            results[check.name] = ({**cancelled, "age_ms": 0.0}, check.critical)
        else:
            results[check.name] = ({**result.fields, "age_ms": 0.0}, result.critical)

    def _reused(
        self, check: HealthCheck, nursery: trio.Nursery
    ) -> tuple[dict[str, Any], bool] | None:
        """``check``'s last result if it may be served again (starting the next probe
        when it is due), else None."""
        entry = self._entries.setdefault(check.name, _Entry())
        asked = trio.current_time()
        result = entry.result
        if (
            result is None
            or asked - result.finished_at > REUSE_S
            or result.fingerprint != _fingerprint(check)
        ):
            return None
        if asked - result.finished_at >= REFRESH_S and entry.running is None:
            self._start_probe(check, entry, nursery)
        return {**result.fields, "age_ms": _ms(asked - result.finished_at)}, result.critical

    def _start_probe(self, check: HealthCheck, entry: _Entry, nursery: trio.Nursery) -> None:
        entry.running = trio.Event()
        entry.started_at = trio.current_time()
        nursery.start_soon(self._probe, check, entry, entry.running)

    async def _probe(self, check: HealthCheck, entry: _Entry, done: trio.Event) -> None:
        entry.probes += 1
        started = trio.current_time()
        try:
            fields: dict[str, Any]
            try:
                with deadline("health.check"):
                    extra = await check.check()
            except CheckFailed as error:
                fields = {"ok": False, "error": error.message, **error.fields}
            except Exception as error:  # a failed check is a report, whatever failed
                fields = {"ok": False, "error": describe_error(error)}
            else:
                fields = {"ok": True, **(extra or {})}
            finished = trio.current_time()
            fields["latency_ms"] = _ms(finished - started)
            entry.result = _Result(fields, check.critical, finished, _fingerprint(check))
        finally:
            entry.running = None
            done.set()


async def run_health_checks(checks: Sequence[HealthCheck]) -> HealthReport:
    """Probe ``checks`` once, concurrently, and summarise them (nothing reused)."""
    return await HealthProbes().report(checks)


def _probe_directory(directory: Path) -> None:
    # A name of its own per probe: concurrent probes (and processes) never collide.
    path = directory / f".health-{os.getpid()}-{secrets.token_hex(6)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(path)


class DataDirCheck:
    """The data directory exists and a file can be created in it, written and removed.

    A real write rather than ``os.access``: a full disk or a file system
    remounted read-only fails it. One worker-thread call under ``file.io``;
    a hung file system is abandoned when the deadline fires (the thread may
    still finish the write and removal later). A limiter of one keeps those
    abandoned threads from piling up: while one still hangs, the next probe
    waits for it within its own deadline instead of starting another thread.
    """

    name = "storage"
    critical = True

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = Path(data_dir)
        self._limiter = trio.CapacityLimiter(1)

    async def check(self) -> None:
        with deadline("file.io"):
            await trio.to_thread.run_sync(
                _probe_directory, self._data_dir, abandon_on_cancel=True, limiter=self._limiter
            )
