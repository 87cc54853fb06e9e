"""Upkeep of the data dir: backups, imports, removing leftovers, sampling the process.

Every file these types write appears whole or not at all: it is written to a
temporary file in its final directory (a name starting with ``.`` and ending
in ``.tmp``), fsynced, and renamed at the end. A cancelled run removes its
temporary file; one killed outright leaves it, and ``cleanup_operation``
removes it later (see :data:`TEMPORARY_FILE_PATTERNS`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import stat
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import trio
from pydantic import BaseModel, ConfigDict, Field

from ..._errors import BadRequest
from ...files import discard_file, publish_file, run_file_io, temporary_path, walk_files, write_at
from ...storage import now
from .._context import OperationContext
from .._model import FINISHED
from .._registry import operation_type

__all__ = ["TEMPORARY_FILE_PATTERNS"]

# Bytes gathered in memory before one write to the file.
_CHUNK_BYTES = 256 * 1024
_LISTED = 1000


def _make_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


async def _files_relative(ctx: OperationContext, path: Path) -> str:
    root = Path(await run_file_io(os.path.realpath, ctx.files_root))
    return path.relative_to(root).as_posix()


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- backup_operation ---------------------------------------------------------------------


class BackupParams(_Params):
    creates_path: ClassVar[bool] = True  # the directory is made when missing

    path: str = Field(default="backups", min_length=1, max_length=4096)


def _backup_target(directory: Path, stamp: str) -> Path | None:
    """``autobot-<stamp>.jsonl`` in ``directory`` (made if missing), suffixed if taken.

    ``None`` when ``directory`` is a file.
    """
    if directory.exists() and not directory.is_dir():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"autobot-{stamp}.jsonl"
    number = 1
    while target.exists():
        number += 1
        target = directory / f"autobot-{stamp}-{number}.jsonl"
    return target


def _file_exists(path: Path) -> bool:
    return path.is_file()


async def _count_records(ctx: OperationContext) -> int:
    seen = 0

    async def count(record: dict[str, Any]) -> None:
        nonlocal seen
        seen += 1
        if seen % 500 == 0:
            await trio.lowlevel.checkpoint()

    return await ctx.store.export_records(count)


@operation_type("backup_operation", params=BackupParams)
async def backup_operation(ctx: OperationContext, params: BackupParams) -> dict[str, Any]:
    """Export the whole store as JSON lines to ``<path>/autobot-<UTC time>.jsonl``.

    The file is the format of ``python -m autobot export`` (and of
    ``migration_operation``); each record is an item. It is written to a
    temporary file in the same directory, fsynced and renamed at the end, so a
    cancelled or failed backup leaves no partial file. A backup is one
    consistent pass over the store: a resumed one that had not finished starts
    its file again (the store has changed since), one that had finished
    returns what it wrote.
    """
    finished = (ctx.resume_state or {}).get("result")
    if finished is not None and await run_file_io(_file_exists, ctx.files_root / finished["path"]):
        return finished
    directory = await ctx.resolve(params.path, must_exist=False)
    target = await run_file_io(_backup_target, directory, _utc_stamp())
    if target is None:
        raise BadRequest(f"{params.path} is a file, not a directory", code="not_a_directory")
    ctx.progress(processed=0, step="counting records")
    ctx.progress(total=await _count_records(ctx), step="exporting")
    temporary = await run_file_io(temporary_path, target)
    state: dict[str, Any] = {"records": 0}
    digest = hashlib.sha256()
    pending = bytearray()
    size = 0
    try:

        async def write(record: dict[str, Any]) -> None:
            nonlocal size
            pending.extend(json.dumps(record, ensure_ascii=False).encode() + b"\n")
            if len(pending) >= _CHUNK_BYTES:
                size = await run_file_io(write_at, temporary, size, bytes(pending), digest)
                pending.clear()
            state["records"] += 1
            await ctx.checkpoint(state, processed_items=state["records"])

        count = await ctx.store.export_records(write)
        size = await run_file_io(write_at, temporary, size, bytes(pending), digest)
        await run_file_io(publish_file, temporary, target, size)
    except BaseException:
        await discard_file(temporary)  # noqa: ASYNC102 - discard_file shields itself
        raise
    result = {
        "path": await _files_relative(ctx, target),
        "records": count,
        "bytes": size,
        "sha256": digest.hexdigest(),
    }
    ctx.progress(total=count, processed=count, message=f"wrote {result['path']}")
    state["result"] = result
    await ctx.checkpoint(state)
    return result


# -- migration_operation --------------------------------------------------------------------


class MigrationParams(_Params):
    path: str = Field(min_length=1, max_length=4096)
    batch_size: int = Field(default=500, ge=1, le=10_000)


# Lines counted per file-I/O call, and the most bytes one batch reads.
_COUNT_BYTES = 64 * 1024 * 1024
_BATCH_BYTES = 16 * 1024 * 1024


def _count_lines(path: Path, offset: int) -> tuple[int, int, bool]:
    """(lines, next offset, at end) for up to :data:`_COUNT_BYTES` from ``offset``.

    A last line without a newline counts as a line.
    """
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read(_COUNT_BYTES)
        at_end = len(data) < _COUNT_BYTES or not file.read(1)
    lines = data.count(b"\n")
    if at_end and data and not data.endswith(b"\n"):
        lines += 1
    return lines, offset + len(data), at_end


def _read_lines(path: Path, offset: int, count: int) -> tuple[list[bytes], int]:
    """Up to ``count`` lines from ``offset`` (fewer past :data:`_BATCH_BYTES`); the next offset."""
    lines: list[bytes] = []
    read = 0
    with path.open("rb") as file:
        file.seek(offset)
        while len(lines) < count and read < _BATCH_BYTES:
            line = file.readline()
            if not line:
                break
            lines.append(line)
            read += len(line)
    return lines, offset + read


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if not isinstance(record.get("kind"), str):
        raise ValueError('no "kind"')
    return record


async def _import_batch(
    ctx: OperationContext, records: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Import one batch; the records stored. An unknown kind fails its line alone.

    The store refuses a batch with a record it does not know as a whole,
    before writing any of it; the batch is then imported record by record,
    to name the lines at fault and keep the rest.
    """
    try:
        await ctx.store.import_records([record for _, record in records])
        return [record for _, record in records]
    except BadRequest:
        pass
    stored = []
    for number, record in records:
        try:
            await ctx.store.import_records([record])
        except BadRequest as error:
            ctx.fail_item(f"line {number}", error.message)
        else:
            stored.append(record)
    return stored


@operation_type("migration_operation", params=MigrationParams, checkpoint_every_item=True)
async def migration_operation(ctx: OperationContext, params: MigrationParams) -> dict[str, Any]:
    """Import a JSON-lines export (``backup_operation``'s, or ``python -m autobot export``'s).

    Records are imported ``batch_size`` lines at a time; each batch is saved
    as the checkpoint (the byte offset and line reached) once it is stored, so
    a resumed import never imports a batch twice. Progress counts lines. A
    line that is not a JSON object with a known ``kind`` is a failed item
    naming its line number (with the default profile, one ends the import:
    fix the line and resume).
    """
    state = ctx.resume_state or {"offset": 0, "line": 0, "imported": 0, "by_kind": {}}
    source = await ctx.resolve(params.path)
    if not await run_file_io(_file_exists, source):
        raise BadRequest(f"{params.path} is not a file", code="not_a_file")
    ctx.progress(step="counting lines")
    lines, offset, at_end = 0, 0, False
    while not at_end:
        counted, offset, at_end = await run_file_io(_count_lines, source, offset)
        lines += counted
    ctx.progress(total=lines, processed=state["line"], step="importing")
    while True:
        batch, end = await run_file_io(_read_lines, source, state["offset"], params.batch_size)
        if not batch:
            break
        first = state["line"] + 1
        records: list[tuple[int, dict[str, Any]]] = []
        for number, line in enumerate(batch, first):
            if not line.strip():
                continue
            try:
                records.append((number, _parse_line(line)))
            except ValueError as error:
                ctx.fail_item(f"line {number}", f"line {number} is {error}")
        stored = await _import_batch(ctx, records)
        state["offset"] = end
        state["line"] += len(batch)
        state["imported"] += len(stored)
        for record in stored:
            state["by_kind"][record["kind"]] = state["by_kind"].get(record["kind"], 0) + 1
        await ctx.checkpoint(state, processed_items=state["line"])
    return {
        "path": params.path,
        "lines": state["line"],
        "records_imported": state["imported"],
        "by_kind": dict(sorted(state["by_kind"].items())),
    }


# -- cleanup_operation ----------------------------------------------------------------------

#: The temporary files interrupted writes leave, matched by name anywhere under the
#: cleaned directories: ``*.tmp`` (this includes the ``.<name>.<random>.tmp`` files
#: of the writes above and of the knowledge index) and ``*.partial`` (downloads).
TEMPORARY_FILE_PATTERNS = ("**/*.tmp", "**/*.partial")
#: The directories of the data dir searched for them: the files root, the runner's
#: per-operation files, the knowledge index. Never the store's own directory.
CLEANED_DIRECTORIES = ("files", "operations", "knowledge")
_REMOVE_BATCH = 64


class CleanupParams(_Params):
    checkpoint_age_days: float = Field(default=7, ge=0, le=36_500, allow_inf_nan=False)
    temp_age_hours: float = Field(default=24, ge=0, le=876_000, allow_inf_nan=False)


def _finished_at(operation: dict[str, Any]) -> datetime | None:
    """When the operation finished; ``None`` (never expired) when it does not say."""
    value = operation.get("finished_at")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _cleaned_roots(data_dir: Path) -> list[tuple[str, Path]]:
    """The cleaned directories that exist, as real paths inside the real data dir."""
    data = Path(os.path.realpath(data_dir))
    roots = []
    for name in CLEANED_DIRECTORIES:
        path = data / name
        if not path.is_symlink() and path.is_dir() and os.path.realpath(path) == str(path):
            roots.append((name, path))
    return roots


def _stale(root: Path, paths: Sequence[str], cutoff: float) -> list[str]:
    """The regular files among ``paths`` last modified before ``cutoff`` (epoch seconds)."""
    stale = []
    for relative in paths:
        with contextlib.suppress(OSError):
            info = os.lstat(root / relative)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                stale.append(relative)
    return stale


def _remove(root: Path, paths: Sequence[str], cutoff: float) -> list[tuple[int | None, str | None]]:
    """Remove each file still stale, checked again just before: (bytes freed or None, error)."""
    outcomes: list[tuple[int | None, str | None]] = []
    for relative in paths:
        path = root / relative
        try:
            info = os.lstat(path)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_mtime >= cutoff
                or os.path.realpath(path.parent) != str(path.parent)
            ):
                outcomes.append((None, None))
                continue
            path.unlink()
            outcomes.append((info.st_size, None))
        except FileNotFoundError:
            outcomes.append((None, None))
        except OSError as error:
            outcomes.append((None, f"{type(error).__name__}: {error}"))
    return outcomes


async def _sort_checkpoints(
    ctx: OperationContext, max_age: timedelta
) -> tuple[list[str], set[str]]:
    """The operations whose checkpoint expired, and those whose work must be kept.

    Kept: every operation not finished, and every finished one whose
    checkpoint has not expired (it can still be resumed, and its files under
    ``operations/<id>/``, such as a partial index, are what it resumes from).
    """
    cutoff = datetime.now(UTC) - max_age
    expired, kept = [], set()
    for operation in await ctx.store.list_operations():
        operation_id = operation["id"]
        if operation.get("status") not in FINISHED:
            kept.add(operation_id)
            continue
        if await ctx.store.get_checkpoint(operation_id) is None:
            continue
        finished_at = _finished_at(operation)
        if finished_at is not None and finished_at <= cutoff:
            expired.append(operation_id)
        else:
            kept.add(operation_id)
    return expired, kept


async def _forget_checkpoint(ctx: OperationContext, operation_id: str) -> None:
    """Delete the checkpoint, and its summary in the record: a resume starts afresh."""
    await ctx.store.delete_checkpoint(operation_id)
    record = await ctx.store.get_operation(operation_id)
    if record is not None and record.get("checkpoint") is not None:
        record["checkpoint"] = None
        await ctx.store.put_operation(record)


def _not_kept(name: str, paths: list[str], kept: set[str]) -> list[str]:
    if name != "operations":
        return paths
    return [path for path in paths if path.split("/", 1)[0] not in kept]


@operation_type("cleanup_operation", params=CleanupParams)
async def cleanup_operation(ctx: OperationContext, params: CleanupParams) -> dict[str, Any]:
    """Remove expired checkpoints and stale temporary files; each removal is an item.

    A checkpoint expires when its operation finished (completed, failed,
    cancelled or timed out) more than ``checkpoint_age_days`` ago: that
    operation can no longer be resumed from where it was. A temporary file
    (:data:`TEMPORARY_FILE_PATTERNS`, under :data:`CLEANED_DIRECTORIES`) is
    stale when unmodified for ``temp_age_hours``; 0 removes all of them,
    including those of writes still going on, so use it only when nothing
    runs, except that the files of an operation that can still be resumed
    (``operations/<id>/``, a partial index) are kept until its checkpoint
    expires. Symbolic links are never followed, and nothing outside the data
    dir is touched. A resumed run finds what is left: what it removed is gone.
    """
    state = ctx.resume_state or {
        "done": 0,
        "checkpoints": [],
        "checkpoints_removed": 0,
        "files": [],
        "files_removed": 0,
        "bytes_freed": 0,
    }
    ctx.progress(step="finding expired checkpoints")
    expired, kept = await _sort_checkpoints(ctx, timedelta(days=params.checkpoint_age_days))
    cutoff = time.time() - params.temp_age_hours * 3600
    stale: list[tuple[str, Path, list[str]]] = []
    for name, root in await run_file_io(_cleaned_roots, Path(ctx.settings.data_dir)):
        found = _not_kept(name, await walk_files(root, TEMPORARY_FILE_PATTERNS), kept)
        stale.append((name, root, await run_file_io(_stale, root, found, cutoff)))
    total = state["done"] + len(expired) + sum(len(paths) for _, _, paths in stale)
    ctx.progress(total=total, processed=state["done"], step="removing checkpoints")
    for operation_id in expired:
        async with ctx.item(f"checkpoint of {operation_id}") as outcome:
            await _forget_checkpoint(ctx, operation_id)
        state["done"] += 1
        if outcome.ok:
            state["checkpoints_removed"] += 1
            if len(state["checkpoints"]) < _LISTED:
                state["checkpoints"].append(operation_id)
        await ctx.checkpoint(state, processed_items=state["done"])
    ctx.progress(step="removing temporary files")
    for name, root, paths in stale:
        for start in range(0, len(paths), _REMOVE_BATCH):
            chunk = paths[start : start + _REMOVE_BATCH]
            outcomes = await run_file_io(_remove, root, chunk, cutoff)
            for relative, (freed, error) in zip(chunk, outcomes, strict=True):
                state["done"] += 1
                if error is not None:
                    ctx.fail_item(f"{name}/{relative}", error)
                elif freed is not None:
                    state["files_removed"] += 1
                    state["bytes_freed"] += freed
                    if len(state["files"]) < _LISTED:
                        state["files"].append(f"{name}/{relative}")
                await ctx.checkpoint(state, processed_items=state["done"])
    return {
        "checkpoints_removed": state["checkpoints"],
        "checkpoints_removed_count": state["checkpoints_removed"],
        "checkpoints_left_out": state["checkpoints_removed"] - len(state["checkpoints"]),
        "files_removed": state["files"],
        "files_removed_count": state["files_removed"],
        "files_left_out": state["files_removed"] - len(state["files"]),
        "bytes_freed": state["bytes_freed"],
    }


# -- monitoring_collection ----------------------------------------------------------------------


class MonitoringParams(_Params):
    creates_path: ClassVar[bool] = True  # the samples file is new

    samples: int = Field(default=10, ge=1, le=1000)
    interval_s: float = Field(default=5, ge=0, le=3600, allow_inf_nan=False)
    path: str | None = Field(default=None, min_length=1, max_length=4096)


_STATUS_FIELD = re.compile(rb"^(VmRSS|VmHWM|Threads):\s+(\d+)", re.MULTILINE)


def _process_and_disk(data_dir: Path) -> dict[str, Any]:
    """The process's memory, CPU, descriptors and threads, and the data dir's disk."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError):
        status = Path("/proc/self/status").read_bytes()
        fields = {name.decode(): int(value) for name, value in _STATUS_FIELD.findall(status)}
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    try:
        open_fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = None
    times = os.times()
    disk = shutil.disk_usage(data_dir)
    return {
        "process": {
            "rss_bytes": fields.get("VmRSS", peak_kib) * 1024,
            "peak_rss_bytes": fields.get("VmHWM", peak_kib) * 1024,
            "cpu_user_s": round(times.user, 3),
            "cpu_system_s": round(times.system, 3),
            "open_fds": open_fds,
            "threads": fields.get("Threads", threading.active_count()),
        },
        "disk": {
            "total_bytes": disk.total,
            "used_bytes": disk.used,
            "free_bytes": disk.free,
            "used_percent": round(100 * disk.used / disk.total, 2) if disk.total else 0.0,
        },
    }


def _sample_summary(summary: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    rss = sample["process"]["rss_bytes"]
    free = sample["disk"]["free_bytes"]
    fds = sample["process"]["open_fds"] or 0
    return {
        "rss_bytes": {
            "min": min(rss, summary.get("rss_bytes", {}).get("min", rss)),
            "max": max(rss, summary.get("rss_bytes", {}).get("max", rss)),
            "last": rss,
        },
        "open_fds": {"max": max(fds, summary.get("open_fds", {}).get("max", fds)), "last": fds},
        "threads": {
            "max": max(sample["process"]["threads"], summary.get("threads", {}).get("max", 0))
        },
        "disk_free_bytes": {
            "min": min(free, summary.get("disk_free_bytes", {}).get("min", free)),
            "last": free,
        },
        "cpu_s": sample["process"]["cpu_user_s"] + sample["process"]["cpu_system_s"],
        "operations": sample["operations"],
    }


def _resumable(temporary: Path, size: int) -> bool:
    try:
        return temporary.stat().st_size >= size
    except OSError:
        return False


def _is_directory(path: Path) -> bool:
    return path.is_dir()


async def _start_file(ctx: OperationContext, client_path: str) -> dict[str, Any]:
    target = await ctx.resolve(client_path, must_exist=False)
    if await run_file_io(_is_directory, target):
        raise BadRequest(f"{client_path} is a directory", code="not_a_file")
    await run_file_io(_make_directory, target.parent)
    temporary = await run_file_io(temporary_path, target)
    return {
        "path": client_path,
        "temporary": temporary.name,
        "offset": 0,
        "taken": 0,
        "written": 0,
        "summary": {},
    }


@operation_type("monitoring_collection", params=MonitoringParams)
async def monitoring_collection(ctx: OperationContext, params: MonitoringParams) -> dict[str, Any]:
    """Take ``samples`` samples, ``interval_s`` apart, of the process, the store and the disk.

    A sample (an item) has the process's resident memory, CPU times, open
    descriptors and threads, the store's operations by status, and the data
    dir's disk usage. The samples are written as JSON lines to ``path``
    (default ``monitoring/<UTC time>.jsonl`` in the files root) through a
    temporary file renamed at the end. A resumed collection goes on appending
    to its temporary file (and starts again if that was removed). The run's
    deadline is the profile's: many samples far apart need a larger ``max_s``.
    """
    state = ctx.resume_state
    if state is not None and state.get("result") is not None:
        return state["result"]
    if state is not None:
        target = await ctx.resolve(state["path"], must_exist=False)
        if not await run_file_io(_resumable, target.with_name(state["temporary"]), state["offset"]):
            state = None
    if state is None:
        state = await _start_file(ctx, params.path or f"monitoring/{_utc_stamp()}.jsonl")
        await ctx.checkpoint(state, processed_items=0)
    target = await ctx.resolve(state["path"], must_exist=False)
    temporary = target.with_name(state["temporary"])
    data_dir = Path(ctx.settings.data_dir)
    ctx.progress(total=params.samples, processed=state["taken"], step="sampling")
    while state["taken"] < params.samples:
        number = state["taken"] + 1
        sample: dict[str, Any] = {"sample": number, "time": now()[0]}
        end = state["offset"]
        async with ctx.item(f"sample {number}") as outcome:
            sample.update(await run_file_io(_process_and_disk, data_dir))
            statuses: dict[str, int] = {}
            for operation in await ctx.store.list_operations():
                status = str(operation.get("status"))
                statuses[status] = statuses.get(status, 0) + 1
            sample["operations"] = {"total": sum(statuses.values()), "by_status": statuses}
            line = json.dumps(sample).encode() + b"\n"
            end = await run_file_io(write_at, temporary, state["offset"], line)
        state["taken"] = number
        if outcome.ok:
            state["offset"] = end
            state["written"] += 1
            state["summary"] = _sample_summary(state["summary"], sample)
        await ctx.checkpoint(state, processed_items=number)
        if number < params.samples:
            await trio.sleep(params.interval_s)
    # The temporary file outlives a cancel, shutdown or timeout, for the resume.
    await run_file_io(publish_file, temporary, target, state["offset"])
    result = {
        "path": await _files_relative(ctx, target),
        "samples": state["written"],
        "bytes": state["offset"],
        "summary": state["summary"],
    }
    state["result"] = result
    await ctx.checkpoint(state)
    return result
