"""The embedded store's durability: a group-committed journal plus snapshots.

One directory holds ``journal-<gen>.jsonl`` files (records appended as they
happen) and at most one ``snapshot-<gen>.jsonl`` (the whole state, written when
the journal grew large). Start-up loads the newest snapshot and replays the
journals from its generation on.

Writes are group-committed: :meth:`Journal.commit` queues records and waits;
one writer task (:meth:`Journal.run`) takes everything queued, appends it with
a single ``write`` and ``fsync``, applies the records to the in-memory state,
and only then wakes the committers. So a commit that returned is on disk, many
concurrent commits share one ``fsync``, and a committer cancelled while
waiting does not split anything: its records are written and applied whole,
or (if the write failed) not at all.

Compaction is a second task (:meth:`Journal.run_compaction`): once the journal
grew past ``compact_after_bytes`` it starts the next generation and writes a
snapshot, while the writer goes on appending. Both are meant to run under a
:class:`~autobot._supervisor.Supervisor`: a write that fails fails its batch and
the writer carries on; a rotation or snapshot that fails (an ``OSError``)
raises out of the compaction task, which is restarted with backoff and tries
the same step again, while writes keep going to the current generation.

File system calls block, so each runs in a worker thread, one at a time (a
``CapacityLimiter`` of one: the journal is a single sequential file), inside
the ``file.io`` deadline. A write that fails or outlives its deadline fails its
batch with ``StorageUnavailable``; the journal then cuts the file back to its
last good length before accepting the next write, so a half-written batch can
never be replayed. A ``LOCK`` file held with ``flock`` keeps a second process
off the same directory. A record of a kind this version does not know (a
file written by a newer one, or damaged) is dropped at replay and reported
through ``drop``, never fatal.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import trio

from .._deadlines import deadline
from .._errors import DeadlineExceeded, StorageUnavailable
from .._logging import log_fields
from ._embedded_state import EmbeddedState
from ._journal_format import decode_lines, encode_record, encode_records
from ._records import EXPORT_KINDS

__all__ = ["JOURNAL_KINDS", "Journal"]

log = logging.getLogger("autobot.storage")

COMPACT_AFTER_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_SNAPSHOT_BATCH = 2000  # records encoded and written per worker-thread call
_FILE_NAME = re.compile(r"^(journal|snapshot)-(\d{6})\.jsonl$")
_SNAPSHOT_END = "snapshot_end"

#: Every record kind a journal may hold (see ``_records.py``).
JOURNAL_KINDS = EXPORT_KINDS | {"chat_deleted", "fact_deleted", "checkpoint_deleted", "inbox_taken"}

T = TypeVar("T")
_Drop = Callable[..., None]


def _log_drop(source: str, reason: str, **detail: Any) -> None:
    log.warning("bad payload dropped", extra=log_fields(source=source, reason=reason, **detail))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _append_and_sync(fd: int, data: bytes) -> None:
    _write_all(fd, data)
    os.fsync(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_and_write(fd: int, records: list[dict[str, Any]], sync: bool = False) -> None:
    _write_all(fd, encode_records(records))
    if sync:
        os.fsync(fd)


def _truncate_and_sync(fd: int, size: int) -> None:
    os.ftruncate(fd, size)
    os.fsync(fd)


class _Batch:
    __slots__ = ("done", "error", "records", "results")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.results: list[bool] = []
        self.error: BaseException | None = None
        self.done = trio.Event()


class Journal:
    """Durable, ordered application of records to an :class:`EmbeddedState`."""

    def __init__(
        self,
        directory: Path,
        state: EmbeddedState,
        *,
        compact_after_bytes: int = COMPACT_AFTER_BYTES,
        drop: _Drop = _log_drop,
    ) -> None:
        self.directory = directory
        self.state = state
        self.compact_after_bytes = compact_after_bytes
        self._drop = drop
        self._limiter = trio.CapacityLimiter(1)
        # Snapshots go to their own file; their writes must not queue journal writes.
        self._snapshot_limiter = trio.CapacityLimiter(1)
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._generation = 0
        self._size = 0  # bytes of whole records in the current journal file
        self._damaged = False  # a failed write may have left bytes past _size
        # Held while the current file is written or swapped for the next generation.
        self._file_lock = trio.Lock()
        self._batch = _Batch()
        self._batch_ready = trio.Event()
        self._compacting = False  # from asking for a compaction until its snapshot is written
        self._compaction_wanted = trio.Event()
        self._snapshot_generation: int | None = None  # rotated, snapshot not yet written
        self.failure: str | None = None  # the last write failure, until a write succeeds
        self.compactions = 0
        self.after_apply: Callable[[list[dict[str, Any]], list[bool]], None] | None = None

    @property
    def generation(self) -> int:
        """The generation of the journal file being written."""
        return self._generation

    # -- file system calls, each in a thread under file.io ------------------------------

    async def _io(
        self, function: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None
    ) -> T:
        with deadline("file.io"):
            return await trio.to_thread.run_sync(
                function, *args, limiter=limiter or self._limiter, abandon_on_cancel=True
            )

    async def _close(self, fd: int) -> None:
        """Close ``fd`` even when the caller is being cancelled (else it would leak)."""
        with trio.CancelScope(shield=True), contextlib.suppress(OSError, DeadlineExceeded):
            await self._io(os.close, fd)

    def _path(self, kind: str, generation: int) -> Path:
        return self.directory / f"{kind}-{generation:06d}.jsonl"

    # -- opening: lock, load the snapshot, replay the journals --------------------------

    async def open(self) -> None:
        await self._io(self.directory.mkdir, 0o755, True, True)
        self._lock_fd = await self._io(self._lock)
        try:
            await self._recover()
        except BaseException:
            await self.aclose()
            raise

    def _lock(self) -> int:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageUnavailable(
                f"{self.directory} is in use by another AutoBot process",
                code="storage_locked",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    async def _recover(self) -> None:
        files: dict[str, list[int]] = {"journal": [], "snapshot": []}
        for name in await self._io(os.listdir, self.directory):
            match = _FILE_NAME.match(name)
            if match:
                files[match[1]].append(int(match[2]))
            elif name.endswith(".tmp"):  # an interrupted snapshot: never renamed into place
                await self._io(os.unlink, self.directory / name)
        snapshot = max(files["snapshot"], default=None)
        journals = sorted(g for g in files["journal"] if snapshot is None or g >= snapshot)

        self.state.replaying = True
        try:
            if snapshot is not None:
                await self._load_snapshot(self._path("snapshot", snapshot))
            for generation in journals:
                last = generation == journals[-1]
                await self._replay_journal(self._path("journal", generation), truncate=last)
        finally:
            self.state.finish_replay()

        self._generation = journals[-1] if journals else (snapshot or 1)
        path = self._path("journal", self._generation)
        self._fd = await self._io(os.open, path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = (await self._io(os.fstat, self._fd)).st_size
        await self._io(_fsync_directory, self.directory)
        log.info(
            "store opened",
            extra=log_fields(
                directory=str(self.directory),
                generation=self._generation,
                chats=len(self.state.chats),
                journal_bytes=self._size,
            ),
        )

    async def _read_records(
        self, path: Path, apply: Callable[[dict[str, Any]], Any]
    ) -> tuple[int, int | None]:
        """Feed every whole, valid record of ``path`` to ``apply`` as it is read.

        Returns the bytes those records span and the offset of the first bad
        line, if any. Records are applied a chunk at a time rather than
        collected, so a large file never sits in memory twice.
        """
        fd = await self._io(os.open, path, os.O_RDONLY)
        pending = b""
        consumed = 0
        try:
            while True:
                chunk = await self._io(os.read, fd, _READ_CHUNK)
                if not chunk:
                    return consumed, None
                pending += chunk
                decoded = decode_lines(pending, consumed)
                for record in decoded.records:
                    apply(record)
                consumed += decoded.consumed
                if decoded.bad_line_at is not None:
                    return consumed, decoded.bad_line_at
                pending = pending[decoded.consumed :]
        finally:
            await self._close(fd)  # noqa: ASYNC102 - _close shields itself

    def _replay_record(self, path: Path, record: dict[str, Any]) -> None:
        if record.get("kind") in JOURNAL_KINDS:
            self.state.apply(record)
        else:
            self._drop(
                "storage.journal", "unknown_kind", path=str(path), kind=repr(record.get("kind"))
            )

    async def _load_snapshot(self, path: Path) -> None:
        ended = False

        def apply(record: dict[str, Any]) -> None:
            nonlocal ended
            if record.get("kind") == _SNAPSHOT_END:
                ended = True
            else:
                self._replay_record(path, record)

        _, bad_line_at = await self._read_records(path, apply)
        if bad_line_at is not None or not ended:
            raise StorageUnavailable(
                f"snapshot {path} is damaged; restore it from a backup or move it away",
                code="storage_damaged",
            )

    async def _replay_journal(self, path: Path, *, truncate: bool) -> None:
        consumed, bad_line_at = await self._read_records(
            path, lambda record: self._replay_record(path, record)
        )
        size = (await self._io(os.stat, path)).st_size
        if consumed < size:
            # A torn or garbled tail: the records before it are whole; drop the rest.
            log.warning(
                "journal tail discarded",
                extra=log_fields(
                    path=str(path),
                    kept_bytes=consumed,
                    dropped_bytes=size - consumed,
                    bad_line_at=bad_line_at,
                ),
            )
            if truncate:
                await self._io(os.truncate, path, consumed)

    # -- the writer ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task; runs until cancelled. Safe to restart after it failed."""
        task_status.started()
        while True:
            await self._batch_ready.wait()
            batch, self._batch = self._batch, _Batch()
            self._batch_ready = trio.Event()
            await self._write(batch)

    async def commit(self, records: list[dict[str, Any]]) -> list[bool]:
        """Write ``records`` durably and apply them; returns each record's ``apply`` result.

        Raises ``StorageUnavailable`` (or ``DeadlineExceeded`` for ``file.io``)
        if the write failed, in which case none of ``records`` was applied.
        Waits while the writer is being restarted; bound it with a deadline.
        """
        if self._fd is None:
            raise StorageUnavailable("the store is closed")
        batch = self._batch
        start = len(batch.records)
        batch.records.extend(records)
        self._batch_ready.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[start : start + len(records)]

    async def _write(self, batch: _Batch) -> None:
        data = b"".join(encode_record(record) for record in batch.records)
        try:
            async with self._file_lock:
                try:
                    if self._damaged:
                        await self._io(_truncate_and_sync, self._fd, self._size)
                        self._damaged = False
                    await self._io(_append_and_sync, self._fd, data)
                except (OSError, DeadlineExceeded) as error:
                    self._damaged = True
                    self.failure = f"{type(error).__name__}: {error}"
                    log.error("journal write failed", extra=log_fields(error=self.failure))
                    batch.error = (
                        error
                        if isinstance(error, DeadlineExceeded)
                        else StorageUnavailable(f"cannot write the journal: {error}")
                    )
                    return
                self._size += len(data)
                self.failure = None
                batch.results = [self.state.apply(record) for record in batch.records]
            if self.after_apply is not None:
                self.after_apply(batch.records, batch.results)
            if self._size >= self.compact_after_bytes and not self._compacting:
                self._compacting = True
                self._compaction_wanted.set()
        except BaseException:
            # The writer is being stopped or has a bug: its committers must not
            # mistake an unfinished batch for a written one.
            if batch.error is None and len(batch.results) != len(batch.records):
                batch.error = StorageUnavailable("the journal writer stopped before this write")
            raise
        finally:
            batch.done.set()

    # -- compaction ---------------------------------------------------------------------

    async def run_compaction(  # noqa: ASYNC114 - started by the store's supervisor
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The compaction task; runs until cancelled.

        Raises ``OSError`` (or ``DeadlineExceeded``) when a rotation or a
        snapshot fails; run again, it retries the step that failed.
        """
        task_status.started()
        while True:
            if self._snapshot_generation is None:
                await self._compaction_wanted.wait()
                await self._rotate()
                self._compaction_wanted = trio.Event()
            assert self._snapshot_generation is not None
            await self._snapshot(self._snapshot_generation)
            self._snapshot_generation = None
            self._compacting = False

    async def _rotate(self) -> None:
        """Start the next journal generation; the writer moves to it between two batches."""
        new_fd = await self._io(
            os.open,
            self._path("journal", self._generation + 1),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
        try:
            await self._io(_fsync_directory, self.directory)
        except BaseException:
            await self._close(new_fd)  # noqa: ASYNC102 - _close shields itself
            raise
        async with self._file_lock:
            old_fd, self._fd = self._fd, new_fd
            self._generation += 1
            self._size = 0
            # A failed write's leftovers stay in the old file; replay stops at them.
            self._damaged = False
            self._snapshot_generation = self._generation
        if old_fd is not None:
            await self._close(old_fd)

    async def _snapshot(self, generation: int) -> None:
        final = self._path("snapshot", generation)
        temporary = final.with_name(final.name + ".tmp")
        renamed = False
        try:
            fd = await self._io(os.open, temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                count = await self._write_snapshot(fd)
            finally:
                await self._close(fd)  # noqa: ASYNC102 - _close shields itself
            await self._io(os.replace, temporary, final)
            renamed = True
            await self._io(_fsync_directory, self.directory)
            for name in await self._io(os.listdir, self.directory):
                match = _FILE_NAME.match(name)
                if match and int(match[2]) < generation:
                    await self._io(os.unlink, self.directory / name)
            self.compactions += 1
            log.info("snapshot written", extra=log_fields(generation=generation, records=count))
        finally:
            if not renamed:
                with trio.CancelScope(shield=True), contextlib.suppress(OSError, DeadlineExceeded):
                    await self._io(os.unlink, temporary)

    async def _write_snapshot(self, fd: int) -> int:
        """Write the state's records to ``fd`` and fsync; returns the record count.

        Records are gathered here, a batch at a time, and encoded and written in
        the worker thread, so the event loop is never held up for long. That is
        safe because the state replaces its records rather than changing them.
        """
        records = self.state.records()
        count = 0
        while batch := list(islice(records, _SNAPSHOT_BATCH)):
            count += len(batch)
            await self._io(_encode_and_write, fd, batch, limiter=self._snapshot_limiter)
        end = [{"kind": _SNAPSHOT_END, "records": count}]
        await self._io(_encode_and_write, fd, end, True, limiter=self._snapshot_limiter)
        return count

    # -- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        for attribute in ("_fd", "_lock_fd"):
            fd = getattr(self, attribute)
            if fd is not None:
                setattr(self, attribute, None)
                await self._close(fd)
