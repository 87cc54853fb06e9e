"""Health checks: run concurrently, each bounded, the whole answer on time.

A check is any object with a ``name``, a ``critical`` flag and an async
``check()`` that returns quietly (optionally with extra fields to report) or
raises. :func:`run_health_checks` starts all checks in one nursery, each inside
the ``health.check`` deadline, the whole inside ``health``; since
``health.check`` is shorter (the settings loader enforces it), a hung
dependency costs one failed check and never the answer.

The report's status follows the contract: ``ok``; ``degraded`` when a
non-critical check failed (Redis, the LLM: dependencies that come back by
themselves); ``down`` when a critical one failed (the process cannot serve).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from ._deadlines import deadline
from ._errors import AutoBotError

__all__ = [
    "DataDirCheck",
    "HealthCheck",
    "HealthReport",
    "run_health_checks",
]


class HealthCheck(Protocol):
    """What :func:`run_health_checks` needs of a check."""

    name: str
    critical: bool

    async def check(self) -> dict[str, Any] | None:
        """Return (extra fields to report, or None) if healthy; raise if not."""
        ...


@dataclass(slots=True)
class HealthReport:
    status: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 503 if self.status == "down" else 200

    def to_body(self) -> dict[str, Any]:
        return {"status": self.status, "checks": self.checks}


def _describe(error: BaseException) -> str:
    if isinstance(error, AutoBotError):
        return error.message
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def _run_check(check: HealthCheck, results: dict[str, dict[str, Any]]) -> None:
    started = trio.current_time()
    result: dict[str, Any]
    try:
        with deadline("health.check"):
            extra = await check.check()
    except Exception as error:
        result = {"ok": False, "error": _describe(error)}
    else:
        result = {"ok": True, **(extra or {})}
    result["latency_ms"] = round((trio.current_time() - started) * 1000, 3)
    results[check.name] = result


async def run_health_checks(checks: Sequence[HealthCheck]) -> HealthReport:
    """Run ``checks`` concurrently and summarise them."""
    results: dict[str, dict[str, Any]] = {}
    with deadline("health"):
        async with trio.open_nursery() as nursery:
            for check in checks:
                nursery.start_soon(_run_check, check, results)
    failed = [check for check in checks if not results[check.name]["ok"]]
    if any(check.critical for check in failed):
        status = "down"
    elif failed:
        status = "degraded"
    else:
        status = "ok"
    return HealthReport(status, {check.name: results[check.name] for check in checks})


class DataDirCheck:
    """The data directory exists and a file can be written into it and removed."""

    name = "storage"
    critical = True

    def __init__(self, data_dir: Path) -> None:
        self._probe = trio.Path(data_dir) / f".health-{os.getpid()}"

    async def check(self) -> None:
        with deadline("file.io"):
            await self._probe.write_bytes(b"ok")
            await self._probe.unlink()
