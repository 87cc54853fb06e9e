"""performance_testing, performance_profiling and load_testing on real scripts and servers."""

from __future__ import annotations

import pathlib
import socket
from typing import Any

import pytest

from autobot import Settings
from autobot._errors import ValidationFailed
from autobot.operations import OperationStatus, registry, run_operation
from autobot.storage import Store
from tests.operations.conftest import write_tree
from tests.support.serving import served

# -- performance_testing ---------------------------------------------------------------------


async def test_performance_testing_times_each_benchmark(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(
        tmp_path,
        {
            "files/bench/bench_fast.py": "total = sum(range(10_000))\n",
            "files/bench/bench_fail.py": "import sys\nsys.exit(3)\n",
            "files/bench/helper.py": "raise SystemExit('not a benchmark: never run')\n",
        },
    )
    run = await run_operation(
        "performance_testing",
        {"path": "bench", "runs": 2},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    scripts = {entry["script"]: entry for entry in result["scripts"]}
    assert sorted(scripts) == ["bench_fail.py", "bench_fast.py"]

    fast = scripts["bench_fast.py"]
    assert [r["exit_code"] for r in fast["runs"]] == [0, 0]
    assert fast["failures"] == 0
    assert 0 < fast["min_s"] <= fast["median_s"] <= fast["max_s"]
    assert fast["max_s"] == max(r["seconds"] for r in fast["runs"])

    fail = scripts["bench_fail.py"]
    assert [r["exit_code"] for r in fail["runs"]] == [3, 3]
    assert fail["failures"] == 2
    assert fail["min_s"] is None
    assert "status 3" in fail["runs"][0]["error"]
    # A non-zero exit is a failed item (2 of them; the threshold is 5).
    assert result["failed_items"] == 2
    assert run.context.processed_items == 4


async def test_performance_testing_resumes_without_redoing_runs(
    tmp_path: pathlib.Path, store: Store
) -> None:
    log = tmp_path / "runs.log"
    # Each run logs itself; the second run ever fails, which (threshold 1) ends the operation.
    script = f"""
        import pathlib, sys
        log = pathlib.Path({str(log)!r})
        with log.open("a") as file:
            file.write("run\\n")
        sys.exit(1 if len(log.read_text().split()) == 2 else 0)
    """
    write_tree(tmp_path, {"files/bench_one.py": script})
    settings = Settings(
        data_dir=tmp_path, operation_profiles={"performance_testing": {"failure_threshold": 1}}
    )
    params = {"path": "bench_one.py", "runs": 3}
    first = await run_operation("performance_testing", params, settings=settings, store=store)
    assert first.outcome.status is OperationStatus.FAILED
    assert first.checkpoint is not None
    assert first.checkpoint["processed_items"] == 1

    again = await run_operation(
        "performance_testing", params, settings=settings, store=store, checkpoint=first.checkpoint
    )
    assert again.outcome.status is OperationStatus.COMPLETED, again.outcome.error
    # Run 1 is not redone; the failed run 2 is, then run 3: four runs in all.
    assert len(log.read_text().split()) == 4
    [summary] = (again.outcome.result or {})["scripts"]
    assert [r["run"] for r in summary["runs"]] == [1, 2, 3]
    assert [r["exit_code"] for r in summary["runs"]] == [0, 0, 0]


async def test_performance_testing_refuses_what_is_not_a_script(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(tmp_path, {"files/notes.txt": "hello\n"})
    run = await run_operation(
        "performance_testing",
        {"path": "notes.txt"},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.FAILED
    assert (run.outcome.error or {})["code"] == "not_a_python_script"


# -- performance_profiling -------------------------------------------------------------------

PROFILED = """\
def work(n):
    return sum(i * i for i in range(n))

for _ in range(3):
    work(20_000)
"""


async def test_performance_profiling_reports_the_costliest_functions(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(tmp_path, {"files/prof/script.py": PROFILED})
    run = await run_operation(
        "performance_profiling",
        {"path": "prof/script.py", "top": 100},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    assert result["exit_code"] == 0
    assert result["profiled"] is True
    assert result["wall_s"] > 0
    functions = result["functions"]
    assert 0 < len(functions) <= 100
    cumulative = [entry["cumulative_s"] for entry in functions]
    assert cumulative == sorted(cumulative, reverse=True)
    # Named relative to the files root, with the calls cProfile counted.
    [work] = [entry for entry in functions if entry["function"] == "prof/script.py:1(work)"]
    assert work["calls"] == 3
    assert work["cumulative_s"] >= work["total_s"] >= 0
    assert "failed_items" not in result
    assert not (tmp_path / "operations" / "local").exists()


async def test_performance_profiling_keeps_the_profile_of_a_script_that_raises(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(tmp_path, {"files/boom.py": PROFILED + "\nraise RuntimeError('boom')\n"})
    run = await run_operation(
        "performance_profiling",
        {"path": "boom.py", "top": 3},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    assert result["exit_code"] == 1
    assert "RuntimeError: boom" in result["error"]
    assert len(result["functions"]) == 3
    assert result["failed_items"] == 1


# -- load_testing ----------------------------------------------------------------------------


class TinyApp:
    """An ASGI app: ``/ok`` and ``/api/health`` answer 200, ``/mixed`` 200 and 500 in turn."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.hits[path] = self.hits.get(path, 0) + 1
        status = 404
        if path in ("/ok", "/api/health"):
            status = 200
        elif path == "/mixed":
            status = 200 if self.hits[path] % 2 else 500
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"answer"})


async def test_load_testing_counts_answers_by_status(tmp_path: pathlib.Path, store: Store) -> None:
    app = TinyApp()
    async with served(app) as client:
        url = str(client.base_url.join("/mixed"))
        run = await run_operation(
            "load_testing",
            {"url": url, "requests": 40, "concurrency": 4},
            settings=Settings(data_dir=tmp_path),
            store=store,
        )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    assert app.hits["/mixed"] == 40
    assert result["count"] == 40
    assert (result["ok"], result["failed"]) == (20, 20)
    assert result["statuses"] == {"200": 20, "500": 20}
    assert result["failed_by_status"] == {"500": 20}
    assert result["failed_by_error"] == {}
    assert result["requests_per_second"] > 0
    latency = result["latency_ms"]
    assert latency["samples"] == 40
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    # An HTTP error status is a result, not a failed item.
    assert "failed_items" not in result
    assert run.context.processed_items == 40


async def test_load_testing_defaults_to_the_servers_own_health(
    tmp_path: pathlib.Path, store: Store
) -> None:
    app = TinyApp()
    async with served(app) as client:
        port = client.base_url.port
        assert port is not None
        run = await run_operation(
            "load_testing",
            {"requests": 10, "concurrency": 2},
            settings=Settings(data_dir=tmp_path, host="0.0.0.0", port=port),
            store=store,
        )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    assert result["url"] == f"http://127.0.0.1:{port}/api/health"
    assert app.hits == {"/api/health": 10}
    assert result["ok"] == 10


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_load_testing_counts_transport_errors_as_failed_items(
    tmp_path: pathlib.Path, store: Store
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    run = await run_operation(
        "load_testing",
        {"url": url, "requests": 5, "concurrency": 2},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    assert result["failed_by_error"] == {"ConnectError": 5}
    assert (result["ok"], result["failed"]) == (0, 5)
    assert result["latency_ms"]["samples"] == 0
    assert result["failed_items"] == 5


async def test_load_testing_against_a_down_server_stops_at_the_failure_threshold(
    tmp_path: pathlib.Path, store: Store
) -> None:
    settings = Settings(
        data_dir=tmp_path, operation_profiles={"load_testing": {"failure_threshold": 3}}
    )
    run = await run_operation(
        "load_testing",
        {"url": f"http://127.0.0.1:{closed_port()}/", "requests": 1000, "concurrency": 2},
        settings=settings,
        store=store,
    )
    assert run.outcome.status is OperationStatus.FAILED
    assert (run.outcome.error or {})["code"] == "operation_failed"
    # Workers already waiting on a refused connection may add one failure each.
    assert 3 <= run.context.failed_count <= 4
    assert run.context.processed_items < 1000


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.0.0.1:8000/",
        "https://192.168.1.1/",
        "ftp://127.0.0.1/",
        "http://127.0.0.1.example.com/",
        "http://localhost.example.com/",
        "http://user@127.0.0.1@example.com/",
        "http://2130706433/",
        "not a url",
    ],
)
async def test_load_testing_refuses_hosts_that_are_not_loopback(
    url: str, tmp_path: pathlib.Path, store: Store
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await run_operation(
            "load_testing", {"url": url}, settings=Settings(data_dir=tmp_path), store=store
        )
    assert raised.value.code == "url_not_allowed"
    assert raised.value.details["fields"][0]["field"] == "params.url"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "https://127.9.9.9/", "http://[::1]:80/", "http://LOCALHOST/"],
)
def test_load_testing_accepts_loopback_urls(url: str) -> None:
    params = registry["load_testing"].parse_params({"url": url})
    assert params.url == url  # type: ignore[attr-defined]


def test_load_testing_accepts_only_get() -> None:
    with pytest.raises(ValidationFailed):
        registry["load_testing"].parse_params({"method": "POST"})
