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
# A built-in type whose items are timed samples: 20 s of them, so a command started
# after it (seconds later on a loaded machine) still finds it running; tests cancel it.
SAMPLES = ["--param", "samples=400", "--param", "interval_s=0.05"]


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
        assert re.match(rf"^{sampling_id} queued from item \d+$", resumed.stdout.strip())
        after = await cli(*url, "ops", "list", "--type", "monitoring_collection")
        (row,) = [line for line in after.lines if sampling_id in line]
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells[2] in ("queued", "running") and cells[5] == "2"  # a second attempt
        assert (await cli(*url, "ops", "cancel", sampling_id)).returncode == 0


@pytest.mark.slow
async def test_watch_in_a_terminal_draws_a_bar_and_refusals_are_one_line(
    tmp_path: pathlib.Path,
) -> None:
    async with server_for(data_dir_with_sources(tmp_path)) as server:
        url = ["--url", server.url]
        started = await cli(*url, "ops", "start", "monitoring_collection", "w.jsonl", *SAMPLES)
        operation_id = started.stdout.strip()
        async with terminal(*url, "ops", "watch", operation_id, env={"TERM": "xterm"}) as term:
            bar = await term.expect(r"\d+/400 items [\d.]+ items/s \d:\d\d:\d\d left")
            await cli(*url, "ops", "cancel", operation_id)
            await term.expect(f"{operation_id} cancelled")
            assert await term.exit_status() == 3
        unknown = await cli(*url, "ops", "watch", "no-such-operation")
        bad_type = await cli(*url, "ops", "start", "no_such_type", "src")
        outside = await cli(*url, "ops", "start", "codebase_indexing", "../..")
    assert "━" in bar  # the bar itself
    assert re.search(r"monitoring_collection running: sampling .*━.* +\d+\.\d%", ANSI.sub("", bar))
    assert_one_error_line(unknown, 1, "operation_not_found")
    assert_one_error_line(bad_type, 1, "no_such_type")
    assert_one_error_line(outside, 1, "path_outside_root")
