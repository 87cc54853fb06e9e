"""``autobot check``: the configuration, then one verdict line per dependency.

The check probes the dependencies itself, opening them the way the server
does at start-up, rather than asking a running server's ``/api/health``:

* it works with no server running, which is when an operator checks a
  deployment: before the first start, after a start that failed, or on a host
  where the server runs elsewhere;
* it tests the configuration it prints, the one this shell's environment and
  ``AUTOBOT_CONFIG`` give, whereas ``/api/health`` reports on whatever
  configuration the answering process was started with.

The probes run at once, each bounded: the store is opened under
``service.start`` as at start-up (the embedded store replays its journal, so
a damaged one fails here), Redis is pinged and the LLM provider asked for its
models under ``health.check``, as ``/api/health`` does. A running server holds
the embedded store's lock; the check then reports the data directory writable
and the store held by that process, which is healthy, not a failure.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import trio

from .. import __version__
from .._config import Settings
from .._deadlines import deadline
from .._errors import StorageUnavailable
from .._health import DataDirCheck, describe_error
from ._client import run_async

__all__ = ["Verdict", "check_dependencies", "run_check"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One dependency's result: ``detail`` says what answered, or why it failed."""

    name: str
    ok: bool
    latency_ms: float
    detail: str

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.name:<8} {verdict:<6} {self.latency_ms:>9.1f} ms  {self.detail}"


async def _storage(settings: Settings) -> str:
    from ..storage import open_store, store_directory

    with deadline("file.io"):
        await trio.Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    await DataDirCheck(settings.data_dir).check()
    if settings.redis_url:
        return f"data dir {settings.data_dir} writable (the files root; the store is on Redis)"
    directory = store_directory(settings)
    try:
        with deadline("service.start"):
            async with open_store(settings):
                pass
    except StorageUnavailable as error:
        if error.code != "storage_locked":
            raise
        return f"embedded store in {directory}, held by a running server"
    return f"embedded store in {directory} opens"


async def _redis(settings: Settings) -> str:
    from ..redis import RedisHealthCheck, open_redis, parse_redis_url

    assert settings.redis_url is not None
    async with open_redis(settings.redis_url, decode_responses=True) as client:
        with deadline("health.check"):
            await RedisHealthCheck(client).check()
    return f"{parse_redis_url(settings.redis_url)} answers PING"


async def _llm(settings: Settings) -> str:
    from ..llm import LLMHealthCheck, open_llm

    async with open_llm(
        settings.llm_provider,
        settings.llm_url,
        settings.llm_model,
        api_key=settings.llm_api_key,
        fallback=settings.llm_fallback,
    ) as llm:
        with deadline("health.check"):
            health: dict[str, Any] = await LLMHealthCheck(llm).check()
    answered = f"{health['provider']} {health['url']}"
    fallback = " (a fallback: the primary is down)" if health.get("fallback") else ""
    return f"{answered}{fallback} lists {health['models']} models; model={health['model']}"


async def _probe(
    name: str, probe: Callable[[Settings], Awaitable[str]], settings: Settings
) -> Verdict:
    started = trio.current_time()
    try:
        detail, ok = await probe(settings), True
    except Exception as error:  # a failed dependency is a verdict, whatever failed
        detail, ok = describe_error(error), False
    return Verdict(name, ok, (trio.current_time() - started) * 1000, detail)


async def check_dependencies(settings: Settings) -> list[Verdict]:
    """Probe storage, Redis (when configured) and the LLM at once; their verdicts in order."""
    probes: list[tuple[str, Callable[[Settings], Awaitable[str]]]] = [("storage", _storage)]
    if settings.redis_url:
        probes.append(("redis", _redis))
    probes.append(("llm", _llm))
    verdicts: dict[str, Verdict] = {}

    async def run(name: str, probe: Callable[[Settings], Awaitable[str]]) -> None:
        verdicts[name] = await _probe(name, probe, settings)

    async with trio.open_nursery() as nursery:
        for name, probe in probes:
            nursery.start_soon(run, name, probe)
    return [verdicts[name] for name, _ in probes]


def run_check(settings: Settings, out: TextIO | None = None) -> int:
    """Print the configuration and the verdicts; 0 when every dependency is ok, else 1."""
    out = out or sys.stdout
    print(f"AutoBot {__version__} configuration", file=out)
    for line in settings.summary():
        print(f"  {line}", file=out)
    print(file=out, flush=True)
    verdicts = run_async(check_dependencies, settings)
    for verdict in verdicts:
        print(verdict.line(), file=out)
    return 0 if all(verdict.ok for verdict in verdicts) else 1
