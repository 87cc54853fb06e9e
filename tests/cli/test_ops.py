"""``autobot ops``: start, list, watch, cancel and resume against a real server."""

from __future__ import annotations

import pathlib
import re

import pytest

from .helpers import (
    ANSI,
    assert_one_error_line,
    cli,
    data_dir_with_sources,
    server_for,
    terminal,
)

OPERATION_ID = re.compile(r"^[0-9a-f]{32}$")
# A built-in type whose items are timed samples: slow enough to watch and cancel.
SAMPLES = ["--param", "samples=30", "--param", "interval_s=0.05"]


@pytest.mark.slow
async def test_start_watch_list_cancel_resume(tmp_path: pathlib.Path) -> None:
    async with server_for(data_dir_with_sources(tmp_path)) as server:
        url = ["--url", server.url]

        started = await cli(*url, "ops", "start", "codebase_indexing", "src")
        assert started.returncode == 0, started.stderr
        (indexing,) = started.lines
        assert OPERATION_ID.match(indexing)

        watched = await cli(*url, "ops", "watch", indexing)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert watched.lines[-1] == f"{indexing} completed"
        assert re.match(r"^100\.0%  5/5 items .* codebase_indexing completed", watched.lines[-2])

        sampling = await cli(*url, "ops", "start", "monitoring_collection", "m.jsonl", *SAMPLES)
        sampling_id = sampling.stdout.strip()
        cancelled = await cli(*url, "ops", "cancel", sampling_id)
        assert (cancelled.returncode, cancelled.stdout) == (0, f"{sampling_id} cancelled\n")
        again = await cli(*url, "ops", "cancel", sampling_id)
        assert_one_error_line(again, 1, "operation_finished")
        watch_cancelled = await cli(*url, "ops", "watch", sampling_id)
        assert watch_cancelled.returncode == 3  # the final status, cancelled
        assert watch_cancelled.lines[-1] == f"{sampling_id} cancelled"

        listed = await cli(*url, "ops", "list")
        assert listed.returncode == 0, listed.stderr
        assert "2 operations" in listed.lines[0]
        rows = {line.split("│")[1].strip(): line for line in listed.lines if "│" in line}
        assert any(line.startswith("┃ id ") and "┃ progress ┃" in line for line in listed.lines)
        assert "codebase_indexing" in rows[indexing] and "completed" in rows[indexing]
        assert "100.0%" in rows[indexing] and "5/5 items" in rows[indexing]
        assert "cancelled" in rows[sampling_id]
        only_cancelled = await cli(*url, "ops", "list", "--status", "cancelled")
        assert indexing not in only_cancelled.stdout and sampling_id in only_cancelled.stdout

        resumed = await cli(*url, "ops", "resume", sampling_id)
        assert resumed.returncode == 0, resumed.stderr
        assert re.match(rf"^{sampling_id} queued( from item \d+)?$", resumed.stdout.strip())
        finished = await cli(*url, "ops", "watch", sampling_id)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert finished.lines[-1] == f"{sampling_id} completed"
        assert "30/30 items" in finished.lines[-2]


@pytest.mark.slow
async def test_watch_in_a_terminal_draws_a_bar_and_refusals_are_one_line(
    tmp_path: pathlib.Path,
) -> None:
    async with server_for(data_dir_with_sources(tmp_path)) as server:
        url = ["--url", server.url]
        samples = ["--param", "samples=16", "--param", "interval_s=0.1"]
        started = await cli(*url, "ops", "start", "monitoring_collection", "w.jsonl", *samples)
        operation_id = started.stdout.strip()
        async with terminal(*url, "ops", "watch", operation_id, env={"TERM": "xterm"}) as term:
            await term.expect(r"\d+/16 items [\d.]+ items/s \d:\d\d:\d\d left")
            output = await term.expect(f"{operation_id} completed")
            assert await term.exit_status() == 0
        unknown = await cli(*url, "ops", "watch", "no-such-operation")
        bad_type = await cli(*url, "ops", "start", "no_such_type", "src")
        outside = await cli(*url, "ops", "start", "codebase_indexing", "../..")
    assert "━" in output  # the bar itself
    assert "100.0% 16/16 items" in ANSI.sub("", output)
    assert_one_error_line(unknown, 1, "operation_not_found")
    assert_one_error_line(bad_type, 1, "no_such_type")
    assert_one_error_line(outside, 1, "path_outside_root")
