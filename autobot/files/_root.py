"""The files root by client path: list, read, write, make and remove, never by joined strings.

:class:`FilesRoot` is what the files API uses. Every method checks the client
path's spelling (:func:`~autobot.files.check_client_path`), walks it beneath
the root's directory descriptor (:func:`._beneath.walk`) and then acts
through the descriptors the walk opened: the file it reads is the file the
walk reached, and the directory it writes in is the directory the walk
reached, whatever was renamed or swapped for a link in the meantime. Each
step is one :func:`~autobot.files.run_file_io` call, so each is bounded by
``file.io``.

What each operation does with the last component:

* **list** and **open** follow it (a link to a directory or file inside the
  root is listed or read; one that leads out is ``400 path_outside_root``).
* **create**, **mkdir** and **delete** act on the name itself: an upload to a
  link replaces the link by the new file, a delete of a link removes the
  link and leaves its target alone.

A new file is written to ``.<name>.<random>.tmp`` in its directory, fsynced
and renamed over the name only by :meth:`FileWriter.publish`; a writer left
unpublished (the client went away, a deadline expired) removes its
temporary file, shielded from the cancellation that ended it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeAlias

import trio

from .._errors import (
    AutoBotError,
    BadRequest,
    Conflict,
    DeadlineExceeded,
    NotFound,
    ValidationFailed,
    echo,
)
from ._beneath import NAME_MAX, Place, not_found, walk
from ._descriptor import Descriptor
from ._io import run_file_io
from ._paths import check_client_path

__all__ = ["MAX_LIST_ENTRIES", "Entry", "FileReader", "FileWriter", "FilesRoot"]

#: Most entries one listing returns; a larger directory is ``422 too_many_entries``.
MAX_LIST_ENTRIES = 10_000
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Entries a recursive delete removes per file.io step.
_DELETE_BATCH = 1_000
# Buffers one pwritev takes at most (Linux's IOV_MAX).
_IOV_MAX = 1024
# A large upload asks the kernel to start writing back every this many bytes,
# so the final fsync waits for little and the page cache is not filled with it.
_WRITEBACK_EVERY = 32 << 20


#: What a writer takes: any bytes-like object.
Buffer: TypeAlias = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a listing: a regular file or a directory (links as what they lead to)."""

    name: str
    type: Literal["file", "dir"]
    size: int
    modified_ns: int


def _is_a_directory(client_path: str) -> Conflict:
    return Conflict(f"{echo(client_path)} is a directory", code="is_a_directory")


# -- the blocking steps --------------------------------------------------------------------


def _entry(name: str, result: os.stat_result) -> Entry | None:
    if stat.S_ISDIR(result.st_mode):
        return Entry(name, "dir", 0, result.st_mtime_ns)
    if stat.S_ISREG(result.st_mode):
        return Entry(name, "file", result.st_size, result.st_mtime_ns)
    return None


def _list(root: Path, segments: list[str], client_path: str, limit: int) -> list[Entry]:
    with walk(root, segments, client_path) as place:
        if place.file is not None:
            raise Conflict(f"{echo(client_path)} is not a directory", code="not_a_directory")
        entries: list[Entry] = []
        links: list[str] = []
        seen = 0
        with place.directory.use() as fd, os.scandir(fd) as scan:
            for item in scan:
                seen += 1
                if seen > limit:
                    raise ValidationFailed(
                        f"{echo(client_path)} holds more than {limit} entries",
                        code="too_many_entries",
                        fields=[{"field": "path", "message": f"more than {limit} entries"}],
                        limit=limit,
                    )
                try:
                    item.name.encode()
                except UnicodeEncodeError:
                    continue  # not UTF-8: no client path can name it either
                if item.is_symlink():
                    links.append(item.name)
                elif (entry := _entry(item.name, item.stat(follow_symlinks=False))) is not None:
                    entries.append(entry)
    for name in links:  # what a link leads to, if it stays inside; out or dangling: left out
        with suppress(AutoBotError, OSError), walk(root, [*segments, name], client_path) as target:
            opened = target.file if target.file is not None else target.directory
            with opened.use() as fd:
                entry = _entry(name, os.fstat(fd))
            if entry is not None:
                entries.append(entry)
    entries.sort(key=lambda entry: entry.name)
    return entries


def _open(root: Path, segments: list[str], client_path: str) -> FileReader:
    place = walk(root, segments, client_path)
    place.directory.close()
    if place.file is None:
        raise _is_a_directory(client_path)
    with place.file.use() as fd:
        result = os.fstat(fd)
        with suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return FileReader(place.file, result)


def _read(descriptor: Descriptor, offset: int, size: int) -> bytes:
    with descriptor.use() as fd:
        data = os.pread(fd, size, offset)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
        while got < size and (more := os.pread(fd, size - got, offset + got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)


def _temporary_name(name: str) -> str:
    stem = name if len(os.fsencode(name)) <= NAME_MAX - 16 else "upload"
    return f".{stem}.{secrets.token_hex(4)}.tmp"


def _create(root: Path, segments: list[str], client_path: str, parents: bool) -> FileWriter:
    if not segments:
        raise _is_a_directory(client_path)
    missing = "create" if parents else "error"
    place = walk(root, segments, client_path, last="stop", missing=missing)
    try:
        return create_in(place, client_path)
    except BaseException:
        place.close()
        raise


def create_in(place: Place, client_path: str) -> FileWriter:
    """A temporary file for ``place.name`` in the directory the walk reached (owns ``place``)."""
    assert place.name is not None
    with place.directory.use() as directory:
        try:
            existing = os.stat(place.name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(existing.st_mode):
                raise _is_a_directory(client_path)
        temporary = _temporary_name(place.name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o644, dir_fd=directory)
    return FileWriter(place, Descriptor(fd), temporary, client_path)


def _write(descriptor: Descriptor, offset: int, pieces: list[Buffer], writeback_from: int) -> None:
    with descriptor.use() as fd:
        views = [memoryview(piece) for piece in pieces if len(piece)]
        while views:
            done = os.pwritev(fd, views[:_IOV_MAX], offset)
            offset += done
            while views and done >= len(views[0]):
                done -= len(views.pop(0))
            if done:
                views[0] = views[0][done:]
        if writeback_from >= 0:
            # Starts writing back what is dirty without waiting for it (and drops it
            # from the page cache once written): the final fsync then has little left.
            os.posix_fadvise(fd, writeback_from, offset - writeback_from, os.POSIX_FADV_DONTNEED)


def _publish(writer: FileWriter) -> None:
    with writer.descriptor.use() as fd:
        os.fsync(fd)
    writer.descriptor.close()
    name = writer.place.name
    with writer.place.directory.use() as directory:
        try:
            os.rename(writer.temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        except (IsADirectoryError, FileExistsError):
            raise _is_a_directory(writer.client_path) from None
        except OSError as error:
            if error.errno != errno.ENOTEMPTY:
                raise
            raise _is_a_directory(writer.client_path) from None
        os.fsync(directory)


def _discard(writer: FileWriter) -> None:
    writer.descriptor.close()
    with writer.place.directory.use() as directory, suppress(FileNotFoundError):
        os.unlink(writer.temporary, dir_fd=directory)


def _mkdir(root: Path, segments: list[str], client_path: str, parents: bool) -> None:
    if not segments:
        raise Conflict("the files root exists already", code="already_exists")
    missing = "create" if parents else "error"
    with walk(root, segments, client_path, last="stop", missing=missing) as place:
        mkdir_in(place, client_path)


def mkdir_in(place: Place, client_path: str) -> None:
    """Make the directory ``place.name`` in the directory the walk reached."""
    assert place.name is not None
    with place.directory.use() as directory:
        try:
            os.mkdir(place.name, 0o755, dir_fd=directory)
        except FileExistsError:
            raise Conflict(f"{echo(client_path)} exists already", code="already_exists") from None
        os.fsync(directory)


def _open_directory_here(parent: int, name: str) -> int | None:
    """``name`` in ``parent`` opened as a directory, or ``None`` if it is anything else."""
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            return None
        raise


def _remove_contents(parent: int, name: str, budget: int) -> None:
    """Remove up to ``budget`` entries under the directory ``name``, deepest first.

    Descends by descriptors opened with ``O_NOFOLLOW``: a link met inside is
    removed, never entered, so the removal cannot be led out of the tree.
    """
    top = _open_directory_here(parent, name)
    if top is None:
        return
    stack = [(top, name)]
    try:
        while stack and budget > 0:
            fd = stack[-1][0]
            descend = None
            with os.scandir(fd) as scan:
                for item in scan:
                    if item.is_dir(follow_symlinks=False):
                        child = _open_directory_here(fd, item.name)
                        if child is not None:
                            descend = (child, item.name)
                            break
                    with suppress(FileNotFoundError):
                        os.unlink(item.name, dir_fd=fd)
                    budget -= 1
                    if budget <= 0:
                        break
            if descend is not None:
                stack.append(descend)
                continue
            if budget <= 0:
                break
            emptied, emptied_name = stack.pop()
            os.close(emptied)
            if stack:
                with suppress(FileNotFoundError):
                    os.rmdir(emptied_name, dir_fd=stack[-1][0])
                budget -= 1
    finally:
        for fd, _ in stack:
            os.close(fd)


def _delete_step(root: Path, segments: list[str], client_path: str, recursive: bool) -> bool:
    with walk(root, segments, client_path, last="stop") as place:
        return delete_in(place, client_path, recursive)


def delete_in(place: Place, client_path: str, recursive: bool) -> bool:
    """Remove ``place.name`` (never followed), or a batch under it; ``True`` once it is gone."""
    assert place.name is not None
    with place.directory.use() as directory:
        try:
            found = os.stat(place.name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            raise not_found(client_path) from None
        try:
            if stat.S_ISDIR(found.st_mode):
                os.rmdir(place.name, dir_fd=directory)
            else:
                os.unlink(place.name, dir_fd=directory)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not recursive:
                raise Conflict(
                    f"{echo(client_path)} is a directory that is not empty"
                    " (delete it with recursive=true)",
                    code="directory_not_empty",
                ) from None
            _remove_contents(directory, place.name, _DELETE_BATCH)
            return False
        os.fsync(directory)
        return True


# -- the async surface ---------------------------------------------------------------------


async def _close_shielded(descriptor: Descriptor) -> None:
    with trio.CancelScope(shield=True), suppress(OSError, DeadlineExceeded):
        await run_file_io(descriptor.close)


class FileReader:
    """A regular file of the root, open for reading at offsets, one ``file.io`` step per read.

    Whatever happens to the name afterwards (replaced by an upload, deleted),
    the reader goes on reading the file it opened. Close it with
    :meth:`aclose` or ``async with``; one never closed is closed when collected.
    """

    def __init__(self, descriptor: Descriptor, result: os.stat_result) -> None:
        self._descriptor = descriptor
        self.size = result.st_size
        self.modified_ns = result.st_mtime_ns
        self.device = result.st_dev
        self.inode = result.st_ino

    @property
    def version(self) -> str:
        """Changes whenever the file does (a new file, a new size or time): for an ETag."""
        return f"{self.inode:x}-{self.size:x}-{self.modified_ns:x}"

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        return await run_file_io(_read, self._descriptor, offset, size)

    async def aclose(self) -> None:
        await _close_shielded(self._descriptor)

    async def __aenter__(self) -> FileReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class FileWriter:
    """A new file written beside its final name, published whole or not at all.

    ``async with`` discards it unless :meth:`publish` ran: the temporary file
    is removed even when the block is left by a cancellation.
    """

    def __init__(self, place: Place, descriptor: Descriptor, temporary: str, client_path: str):
        self.place = place
        self.descriptor = descriptor
        self.temporary = temporary
        self.client_path = client_path
        self.size = 0
        self._written_back = 0
        self._finished = False

    async def write(self, data: Buffer | Sequence[Buffer]) -> None:
        """Append ``data``, a buffer or a list of them (one ``file.io`` step, ``pwritev`` calls).

        The buffers must not change until the step returns, nor after a step
        that was abandoned: pass new ones each time.
        """
        pieces = list(data) if isinstance(data, list | tuple) else [data]
        end = self.size + sum(len(piece) for piece in pieces)
        writeback_from = -1
        if end - self._written_back >= _WRITEBACK_EVERY:
            writeback_from, self._written_back = self._written_back, end
        await run_file_io(_write, self.descriptor, self.size, pieces, writeback_from)
        self.size = end

    async def publish(self) -> int:
        """fsync the file, rename it over the name, fsync the directory; returns the size."""
        await run_file_io(_publish, self)
        self._finished = True
        await _close_shielded(self.place.directory)
        return self.size

    async def discard(self) -> None:
        """Remove the temporary file, even while the caller is being cancelled."""
        if self._finished:
            return
        self._finished = True
        with trio.CancelScope(shield=True), suppress(OSError, DeadlineExceeded):
            await run_file_io(_discard, self)
        await _close_shielded(self.place.directory)

    async def __aenter__(self) -> FileWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.discard()  # noqa: ASYNC102 - shielded and bounded by file.io inside


class FilesRoot:
    """The files root (``<data>/files``) addressed by client paths; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    async def list(self, client_path: str, *, limit: int = MAX_LIST_ENTRIES) -> list[Entry]:
        """The entries of a directory, sorted by name; ``422 too_many_entries`` over ``limit``.

        Other kinds of files (sockets, FIFOs), links that lead out of the root
        and names that are not UTF-8 are left out.
        """
        segments = check_client_path(client_path)
        return await run_file_io(_list, self.root, segments, client_path, limit)

    async def open(self, client_path: str) -> FileReader:
        """The regular file at ``client_path``, open for reading (``409 is_a_directory``)."""
        segments = check_client_path(client_path)
        return await run_file_io(_open, self.root, segments, client_path)

    async def create(self, client_path: str, *, parents: bool = False) -> FileWriter:
        """A writer for a new file at ``client_path``, to :meth:`FileWriter.publish` when complete.

        A missing directory on the way is ``404 file_not_found``, or made with
        ``parents``; a directory at ``client_path`` is ``409 is_a_directory``.
        """
        segments = check_client_path(client_path)
        return await run_file_io(_create, self.root, segments, client_path, parents)

    async def mkdir(self, client_path: str, *, parents: bool = False) -> None:
        """Make a directory; ``409 already_exists`` if the name is taken (by anything)."""
        segments = check_client_path(client_path)
        await run_file_io(_mkdir, self.root, segments, client_path, parents)

    async def delete(self, client_path: str, *, recursive: bool = False) -> None:
        """Remove a file, a link or an empty directory (a full one with ``recursive``).

        The root itself is ``400 cannot_delete_root``; a full directory without
        ``recursive`` is ``409 directory_not_empty``. A recursive delete takes
        one ``file.io`` step per thousand entries; cut short, it leaves what it
        had not removed yet.
        """
        segments = check_client_path(client_path)
        if not segments:
            raise BadRequest("the files root itself cannot be deleted", code="cannot_delete_root")
        first = True
        while True:
            try:
                if await run_file_io(_delete_step, self.root, segments, client_path, recursive):
                    return
            except NotFound:
                if first:
                    raise
                return  # removed by someone else meanwhile: gone is gone
            first = False
