"""Performance: timed runs of scripts, a cProfile of one script, and a load test over HTTP.

``performance_testing`` and ``performance_profiling`` run Python scripts from
the files root in subprocesses (each run one item, killed with its process
group when the item's budget or the operation ends). ``load_testing`` sends
GET requests from a pool of workers, to the server's own health endpoint by
default; a URL given by the client must point at a loopback host, so the
operation cannot be turned against other machines.
"""

from __future__ import annotations

import ipaddress
import math
import os
import pstats
import random
import statistics
import sys
from pathlib import Path
from typing import Any, Literal

import httpx
import trio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..._config import Settings
from ..._errors import AutoBotError, ValidationFailed, echo
from ...files import run_file_io, walk_files
from .._context import OperationContext, OperationFailed
from .._registry import operation_type
from ._test_suite import child_environment, scratch_directory, short_output

__all__ = ["load_testing", "performance_profiling", "performance_testing"]

BENCHMARK_PATTERNS = ("**/bench_*.py",)
_SCRIPTS_KEPT = 1000

# Latency samples a load test keeps (a uniform reservoir beyond that), in its
# checkpoint and for its percentiles; the maximum is always exact.
_LATENCY_SAMPLES = 10_000
# Requests between two checkpoint calls of a load test (the runner throttles saving).
_CHECKPOINT_BATCH = 50


class ScriptFailed(AutoBotError):
    """A script exited with a non-zero status: the run is a failed item."""

    code = "script_failed"


def _exit_error(completed: Any) -> str:
    output = short_output(completed.stderr, completed.stdout)
    return f"exited with status {completed.returncode}" + (f": {output}" if output else "")


def _is_python_script(path: Path) -> bool:
    return path.is_file() and path.suffix == ".py"


async def _python_script(client_path: str, script: Path) -> Path:
    """``script`` (``client_path`` resolved); 422 ``not_a_python_script`` unless a ``.py`` file."""
    if not await run_file_io(_is_python_script, script):
        raise ValidationFailed(
            f"{echo(client_path)} is not a Python script",
            code="not_a_python_script",
            fields=[{"field": "params.path", "message": "must name a .py file"}],
        )
    return script


def _relative_to(path: str, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (results do not show server paths)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


# -- performance_testing --------------------------------------------------------------------


class BenchmarkParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)
    runs: int = Field(default=3, ge=1, le=20)


async def _benchmark_scripts(ctx: OperationContext, client_path: str) -> tuple[Path, list[str]]:
    target = await ctx.resolve(client_path)
    if await run_file_io(os.path.isdir, target):
        return target, await walk_files(target, BENCHMARK_PATTERNS)
    script = await _python_script(client_path, target)
    return script.parent, [script.name]


async def _timed_run(
    ctx: OperationContext, script: Path, name: str, number: int, env: dict[str, str]
) -> dict[str, Any]:
    record: dict[str, Any] = {"run": number, "seconds": None, "exit_code": None}
    async with ctx.item(f"{name} run {number}") as outcome:
        started = trio.current_time()
        completed = await ctx.run_process([sys.executable, script], cwd=script.parent, env=env)
        record["seconds"] = round(trio.current_time() - started, 6)
        record["exit_code"] = completed.returncode
        if completed.returncode != 0:
            raise ScriptFailed(_exit_error(completed))
    if not outcome.ok:
        record["error"] = outcome.error
    return record


def _script_summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [run["seconds"] for run in runs if run["exit_code"] == 0]
    return {
        "script": name,
        "runs": runs,
        "failures": len(runs) - len(times),
        "min_s": min(times) if times else None,
        "median_s": round(statistics.median(times), 6) if times else None,
        "max_s": max(times) if times else None,
    }


@operation_type("performance_testing", params=BenchmarkParams)
async def performance_testing(ctx: OperationContext, params: BenchmarkParams) -> dict[str, Any]:
    """Time a Python script, or each ``bench_*.py`` under a directory, over several runs.

    Each run is a subprocess timed from start to exit (interpreter start-up
    included) and one item; a run that exits non-zero is a failed item.
    Result per script: min, median and max seconds of the successful runs,
    and the number of failed ones.
    """
    base, scripts = await _benchmark_scripts(ctx, params.path)
    state = ctx.resume_state or {"runs": {}}
    runs: dict[str, list[dict[str, Any]]] = state["runs"]
    processed = sum(min(len(runs.get(name, [])), params.runs) for name in scripts)
    ctx.progress(total=len(scripts) * params.runs, processed=processed, step="timing scripts")
    env = child_environment()
    for name in scripts:
        for number in range(len(runs.get(name, [])) + 1, params.runs + 1):
            record = await _timed_run(ctx, base / name, name, number, env)
            runs.setdefault(name, []).append(record)
            processed += 1
            await ctx.checkpoint(state, processed_items=processed)
    return {
        "path": params.path,
        "runs_per_script": params.runs,
        "scripts": [_script_summary(name, runs.get(name, [])) for name in scripts[:_SCRIPTS_KEPT]],
        "scripts_omitted": max(0, len(scripts) - _SCRIPTS_KEPT),
    }


# -- performance_profiling ------------------------------------------------------------------


class ProfilingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)
    top: int = Field(default=20, ge=1, le=100)


def _function_name(key: tuple[str, int, str], root: Path) -> str:
    file, line, function = key
    if file == "~" and line == 0:  # a built-in: cProfile names it in full
        return function
    return f"{_relative_to(file, root)}:{line}({function})"


def _load_profile(stats_path: Path, top: int, files_root: Path) -> dict[str, Any] | None:
    """The ``top`` functions by cumulative time; ``None`` when no stats were written."""
    if not stats_path.is_file():
        return None
    stats = pstats.Stats(str(stats_path))
    root = Path(os.path.realpath(files_root))
    rows = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)
    return {
        "profiled_s": round(stats.total_tt, 6),
        "function_count": len(rows),
        "functions": [
            {
                "function": _function_name(key, root),
                "calls": calls,
                "primitive_calls": primitive,
                "total_s": round(own, 6),
                "cumulative_s": round(cumulative, 6),
            }
            for key, (primitive, calls, own, cumulative, _callers) in rows[:top]
        ],
    }


@operation_type("performance_profiling", params=ProfilingParams)
async def performance_profiling(ctx: OperationContext, params: ProfilingParams) -> dict[str, Any]:
    """Run a Python script under cProfile and report its costliest functions.

    One item: the profiled run. Result: the ``top`` functions by cumulative
    time (``file:line(function)``, calls, own and cumulative seconds), the
    run's wall time and exit status. A script that raises still leaves its
    profile (cProfile writes it on the way out), and counts as a failed item.
    """
    if ctx.resume_state is not None and "result" in ctx.resume_state:
        return ctx.resume_state["result"]
    script = await _python_script(params.path, await ctx.resolve(params.path))
    ctx.progress(total=1, step="profiling")
    run: dict[str, Any] = {"exit_code": None, "wall_s": None}
    async with scratch_directory(ctx) as scratch:
        stats_path = scratch / "profile.pstats"
        argv = [sys.executable, "-m", "cProfile", "-o", stats_path, script]
        async with ctx.item(params.path) as outcome:
            started = trio.current_time()
            completed = await ctx.run_process(argv, cwd=script.parent, env=child_environment())
            run["wall_s"] = round(trio.current_time() - started, 6)
            run["exit_code"] = completed.returncode
            if completed.returncode != 0:
                raise ScriptFailed(_exit_error(completed))
        profile = await run_file_io(_load_profile, stats_path, params.top, ctx.files_root)
    result: dict[str, Any] = {"path": params.path, **run, "profiled": profile is not None}
    result.update(profile or {"functions": []})
    if not outcome.ok:
        result["error"] = outcome.error
    state = {"result": result}
    await ctx.checkpoint(state, processed_items=1)
    return result


# -- load_testing ---------------------------------------------------------------------------


def _refuse(url: str, why: str) -> ValidationFailed:
    return ValidationFailed(
        f"{echo(url)} is not allowed: {why}",
        code="url_not_allowed",
        fields=[{"field": "params.url", "message": "must be an http(s) URL on a loopback host"}],
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def loopback_url(url: str) -> httpx.URL:
    """``url`` parsed, if it is http(s) on a loopback host; else 422 ``url_not_allowed``.

    Parsed by httpx, the same parser that will connect, so what is checked is
    what is reached. Only the canonical spellings pass: ``127.0.0.0/8``,
    ``::1`` and ``localhost`` (``127.1`` or ``2130706433`` do not).
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise _refuse(url, f"not a valid URL ({error})") from None
    if parsed.scheme not in ("http", "https"):
        raise _refuse(url, "only http and https are load tested")
    if not _is_loopback(parsed.host):
        raise _refuse(url, "only loopback hosts (127.0.0.0/8, ::1, localhost) may be load tested")
    return parsed


def own_health_url(settings: Settings) -> httpx.URL:
    """The server's own ``/api/health`` (a wildcard bind is reached over loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return httpx.URL(f"http://{host}:{settings.port}/api/health")


class LoadParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    requests: int = Field(default=200, ge=1, le=100_000)
    concurrency: int = Field(default=8, ge=1, le=64)
    method: Literal["GET"] = "GET"

    @field_validator("url")
    @classmethod
    def _loopback_only(cls, url: str | None) -> str | None:
        # ValidationFailed is not a ValueError: pydantic lets it through as it is, so
        # the start request is refused with its own code rather than a generic one.
        if url is not None:
            loopback_url(url)
        return url


def _new_load_state() -> dict[str, Any]:
    return {
        "processed": 0,
        "ok": 0,
        "statuses": {},
        "errors": {},
        "elapsed_s": 0.0,
        "latencies_ms": [],
        "responses": 0,
        "max_ms": 0.0,
    }


def _percentile(ordered: list[float], share: float) -> float | None:
    if not ordered:
        return None
    rank = min(len(ordered), max(1, math.ceil(share * len(ordered))))  # nearest rank
    return ordered[rank - 1]


class _LoadTest:
    """The workers' shared bookkeeping; every change is synchronous, between two awaits."""

    def __init__(self, ctx: OperationContext, state: dict[str, Any], total: int) -> None:
        self.ctx = ctx
        self.state = state
        self.total = total
        self.issued = state["processed"]
        self.elapsed_before = state["elapsed_s"]
        self.started = trio.current_time()
        self.stopped: OperationFailed | None = None
        self._random = random.Random()

    def next_request(self) -> int | None:
        if self.issued >= self.total:
            return None
        self.issued += 1
        return self.issued

    def record(self, status: int | None, error: str | None, latency_ms: float) -> None:
        state = self.state
        state["processed"] += 1
        if status is not None:
            key = str(status)
            state["statuses"][key] = state["statuses"].get(key, 0) + 1
            if status < 400:
                state["ok"] += 1
            self._sample(round(latency_ms, 3))
        else:
            kind = error or "error"
            state["errors"][kind] = state["errors"].get(kind, 0) + 1
        state["elapsed_s"] = self.elapsed_before + (trio.current_time() - self.started)
        self.ctx.progress(processed=state["processed"])

    def _sample(self, latency_ms: float) -> None:
        state = self.state
        state["responses"] += 1
        state["max_ms"] = max(state["max_ms"], latency_ms)
        samples = state["latencies_ms"]
        if len(samples) < _LATENCY_SAMPLES:
            samples.append(latency_ms)
            return
        slot = self._random.randrange(state["responses"])
        if slot < _LATENCY_SAMPLES:
            samples[slot] = latency_ms

    async def worker(
        self, client: httpx.AsyncClient, url: httpx.URL, cancel_scope: trio.CancelScope
    ) -> None:
        try:
            while (number := self.next_request()) is not None:
                await self._request(client, url, number)
        except OperationFailed as error:  # failure_threshold reached: stop every worker
            self.stopped = error
            cancel_scope.cancel()

    async def _request(self, client: httpx.AsyncClient, url: httpx.URL, number: int) -> None:
        status: int | None = None
        error: str | None = None
        started = trio.current_time()
        # The request is an item: within per_item_s, and a transport error is a failed item.
        async with self.ctx.item(f"request {number}") as outcome:
            try:
                async with client.stream("GET", url) as response:
                    async for _chunk in response.aiter_raw():
                        pass
                    status = response.status_code
            except Exception as request_error:
                error = type(request_error).__name__
                raise
        latency_ms = (trio.current_time() - started) * 1000
        if not outcome.ok and error is None:
            error = "timeout"  # nothing raised inside: the item's deadline expired
        self.record(status, error, latency_ms)
        if self.state["processed"] % _CHECKPOINT_BATCH == 0:
            await self.ctx.checkpoint(self.state, processed_items=self.state["processed"])

    def result(self, url: httpx.URL, concurrency: int) -> dict[str, Any]:
        state = self.state
        failed_by_status = {code: n for code, n in state["statuses"].items() if int(code) >= 400}
        ordered = sorted(state["latencies_ms"])
        elapsed = state["elapsed_s"]
        return {
            "url": str(url),
            "method": "GET",
            "requests": self.total,
            "concurrency": concurrency,
            "count": state["processed"],
            "ok": state["ok"],
            "failed": state["processed"] - state["ok"],
            "statuses": state["statuses"],
            "failed_by_status": failed_by_status,
            "failed_by_error": state["errors"],
            "elapsed_s": round(elapsed, 3),
            "requests_per_second": round(state["processed"] / elapsed, 2) if elapsed > 0 else None,
            "latency_ms": {
                "p50": _percentile(ordered, 0.50),
                "p90": _percentile(ordered, 0.90),
                "p99": _percentile(ordered, 0.99),
                "max": state["max_ms"] if ordered else None,
                "samples": len(ordered),
            },
        }


def _client(concurrency: int) -> httpx.AsyncClient:
    # Built in a file-I/O thread: the client loads the CA bundle from disk.
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=httpx.Timeout(None),  # each request is bounded by its item's deadline
        follow_redirects=False,  # a loopback server must not redirect the load elsewhere
        trust_env=False,  # nor a proxy from the environment carry it off the host
    )


@operation_type("load_testing", params=LoadParams)
async def load_testing(ctx: OperationContext, params: LoadParams) -> dict[str, Any]:
    """Send GET requests from concurrent workers and report throughput and latency.

    The target is the server's own ``/api/health`` unless ``url`` names
    another on a loopback host. Each request is an item (bounded by
    ``per_item_s``); an HTTP error status is counted, a transport error or a
    timeout is also a failed item, so a server that is down ends the run at
    ``failure_threshold``. Latency percentiles are over the requests that got
    an answer. ``ok`` counts statuses below 400 (redirects are not followed).
    """
    url = own_health_url(ctx.settings) if params.url is None else loopback_url(params.url)
    state = ctx.resume_state or _new_load_state()
    load = _LoadTest(ctx, state, params.requests)
    ctx.progress(total=params.requests, processed=state["processed"], step="sending requests")
    client = await run_file_io(_client, params.concurrency)
    async with client:
        async with trio.open_nursery() as nursery:
            for _ in range(params.concurrency):
                nursery.start_soon(load.worker, client, url, nursery.cancel_scope)
    if load.stopped is not None:
        raise load.stopped
    await ctx.checkpoint(state, processed_items=state["processed"])
    return load.result(url, params.concurrency)
