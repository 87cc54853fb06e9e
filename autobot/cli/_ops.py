"""``autobot ops``: start, list, watch, cancel and resume long-running operations.

``watch`` follows the operation's progress WebSocket and draws a ``rich``
progress bar with the server's rate and the time left at that rate, until the
operation ends; its exit status is the final status's (:data:`WATCH_EXIT`),
so a script can wait for an operation with it. A socket that closes before
the end (a server restarting, another process adopting the operation) is
followed again after asking for the record, so the watch ends only when the
operation does, within ``operation.run``, the ceiling of any run.

Into a pipe, ``watch`` writes a plain line per update instead (at most one a
second, plus every change of status), and ``list`` a plain table.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import trio
import trio_websocket
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from .._deadlines import deadline
from ._client import ClientError, ServerClient, path_segment, run_async
from ._output import console, format_duration

__all__ = [
    "FINISHED",
    "WATCH_EXIT",
    "parse_param",
    "run_cancel",
    "run_list",
    "run_resume",
    "run_start",
    "run_watch",
]

FINISHED = ("completed", "failed", "cancelled", "timed_out")
#: ``ops watch``'s exit status for each final status (2 stays the usage error's).
WATCH_EXIT = {"completed": 0, "failed": 1, "cancelled": 3, "timed_out": 4}

# Between following the progress socket again after it closed early.
_REFOLLOW_S = 0.5
# Plain output: at most one progress line this often.
_PLAIN_EVERY_S = 1.0


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is JSON when it parses as JSON (``5``, ``true``, ``["*.py"]``),
    else the text itself."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _operation_path(operation_id: str, action: str = "") -> str:
    return f"/api/operations/{path_segment(operation_id)}" + (f"/{action}" if action else "")


def _items(progress: Mapping[str, Any]) -> str:
    total = progress.get("total_items")
    done = progress.get("processed_items") or 0
    return f"{done}/{total} items" if total is not None else f"{done} items"


def _rate(progress: Mapping[str, Any]) -> str:
    rate = progress.get("items_per_second") or 0.0
    return f"{rate:.3g} items/s" if rate > 0 else "- items/s"


def _time_left(progress: Mapping[str, Any], status: str) -> str:
    """At the server's current rate; from the counts, so the two clocks need not agree."""
    if status in FINISHED:
        return "-"
    rate = progress.get("items_per_second") or 0.0
    total, done = progress.get("total_items"), progress.get("processed_items") or 0
    if not total or rate <= 0:
        return format_duration(0) if total and done >= total else "-"
    return format_duration(max(0.0, (total - done) / rate))


def _stamp(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "-"


# -- start, cancel, resume ------------------------------------------------------------------


def run_start(
    url: str,
    token: str | None,
    type_name: str,
    path: str | None,
    params: list[tuple[str, Any]],
    priority: str | None,
) -> int:
    """Print the new operation's id (alone on its line, for ``id=$(autobot ops start ...)``)."""
    body: dict[str, Any] = {"type": type_name, "params": dict(params)}
    if path is not None:
        body["params"]["path"] = path
    if priority is not None:
        body["priority"] = priority

    async def start() -> dict[str, Any]:
        async with ServerClient(url, token) as client:
            return await client.request("POST", "/api/operations", json_body=body)

    print(run_async(start)["operation_id"])
    return 0


def _post_action(url: str, token: str | None, operation_id: str, action: str) -> dict[str, Any]:
    async def post() -> dict[str, Any]:
        async with ServerClient(url, token) as client:
            return await client.request("POST", _operation_path(operation_id, action))

    return run_async(post)


def run_cancel(url: str, token: str | None, operation_id: str) -> int:
    record = _post_action(url, token, operation_id, "cancel")
    print(f"{record['id']} {record['status']}")
    return 0


def run_resume(url: str, token: str | None, operation_id: str) -> int:
    record = _post_action(url, token, operation_id, "resume")
    checkpoint = record.get("checkpoint") or {}
    where = f" from item {checkpoint['processed_items']}" if checkpoint else ""
    print(f"{record['id']} {record['status']}{where}")
    return 0


# -- list -------------------------------------------------------------------------------------


def run_list(url: str, token: str | None, status: str | None, type_name: str | None) -> int:
    params = {key: value for key, value in (("status", status), ("type", type_name)) if value}

    async def fetch() -> list[dict[str, Any]]:
        async with ServerClient(url, token) as client:
            body = await client.request("GET", "/api/operations", params=params)
            return body["operations"]

    operations = run_async(fetch)
    table = Table(title=f"{len(operations)} operations", title_justify="left")
    for name in ("id", "type", "status", "progress", "items", "attempts", "created", "finished"):
        table.add_column(name, no_wrap=True, justify="right" if name == "progress" else "left")
    for record in operations:
        progress = record.get("progress") or {}
        table.add_row(
            record["id"],
            record["type"],
            record["status"],
            f"{progress.get('progress_percentage', 0.0):.1f}%",
            _items(progress),
            str(record.get("attempts", 0)),
            _stamp(record.get("created_at")),
            _stamp(record.get("finished_at")),
        )
    console().print(table)
    return 0


# -- watch ------------------------------------------------------------------------------------


class _PlainView:
    """One line per update, at most one a second, and every status change."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._type = record["type"]
        self._status = record["status"]
        self._last_print = -_PLAIN_EVERY_S
        self._last_line = ""

    def __enter__(self) -> _PlainView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def progress(self, progress: Mapping[str, Any], *, force: bool = False) -> None:
        line = (
            f"{progress.get('progress_percentage', 0.0):5.1f}%  {_items(progress)}  "
            f"{_rate(progress)}  {_time_left(progress, self._status)} left  "
            f"{self._type} {self._status}: {progress.get('current_step') or '-'}"
        )
        now = time.monotonic()
        if line != self._last_line and (force or now - self._last_print >= _PLAIN_EVERY_S):
            print(line, flush=True)
            self._last_print, self._last_line = now, line

    def status(self, record: Mapping[str, Any]) -> None:
        self._status = record["status"]
        self.progress(record.get("progress") or {}, force=True)


class _BarView:
    """A ``rich`` progress bar: step, bar, percentage, items, rate, time left."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._type = record["type"]
        self._status = record["status"]
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[items]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[left]} left"),
            console=console(),
        )
        self._task: TaskID = self._bar.add_task(
            self._describe({}), total=100.0, items="", rate="", left="-"
        )

    def __enter__(self) -> _BarView:
        self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.stop()

    def _describe(self, progress: Mapping[str, Any]) -> str:
        step = progress.get("current_step")
        return f"{self._type} {self._status}" + (f": {step}" if step else "")

    def progress(self, progress: Mapping[str, Any]) -> None:
        self._bar.update(
            self._task,
            completed=float(progress.get("progress_percentage") or 0.0),
            description=self._describe(progress),
            items=_items(progress),
            rate=_rate(progress),
            left=_time_left(progress, self._status),
        )

    def status(self, record: Mapping[str, Any]) -> None:
        self._status = record["status"]
        self.progress(record.get("progress") or {})


def _decode(raw: str | bytes, url: str) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise ClientError(f"{url}: the progress socket sent something that is not a JSON object")
    return message


async def _follow(
    client: ServerClient, operation_id: str, view: _PlainView | _BarView
) -> dict[str, Any]:
    """Show the progress until the operation ends; its final record."""
    while True:
        try:
            async with client.websocket(_operation_path(operation_id, "progress")) as socket:
                while True:
                    message = _decode(await socket.get_message(), client.url)
                    if message.get("type") == "progress_update":
                        view.progress(message["data"])
                    elif message.get("type") == "status":
                        view.status(message["data"])
                        if message["data"]["status"] in FINISHED:
                            return message["data"]
        except trio_websocket.ConnectionClosed:
            pass  # closed before the end: see where it is, then follow again
        record = await client.request("GET", _operation_path(operation_id))
        if record["status"] in FINISHED:
            view.status(record)
            return record
        await trio.sleep(_REFOLLOW_S)


def _outcome(record: Mapping[str, Any]) -> str:
    line = f"{record['id']} {record['status']}"
    error = record.get("error")
    if isinstance(error, dict):
        line += f": {error.get('code')}: {error.get('message')}"
    elif error:
        line += f": {error}"
    return line


def run_watch(url: str, token: str | None, operation_id: str) -> int:
    """Follow until the end; exit with :data:`WATCH_EXIT` of the final status."""

    async def watch() -> dict[str, Any]:
        async with ServerClient(url, token) as client:
            record = await client.request("GET", _operation_path(operation_id))
            view = _BarView(record) if sys.stdout.isatty() else _PlainView(record)
            with view:
                if record["status"] in FINISHED:
                    view.status(record)
                    return record
                with deadline("operation.run"):
                    return await _follow(client, operation_id, view)

    record = run_async(watch)
    print(_outcome(record), flush=True)
    return WATCH_EXIT.get(record["status"], 1)
