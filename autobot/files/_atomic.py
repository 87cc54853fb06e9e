"""Files that appear whole or not at all: a temporary file beside the target, then a rename.

A writer creates ``.<name>.<random>.tmp`` in the target's directory (so the
rename stays within one file system), writes it at offsets (each write opens
the file anew, so a write abandoned by a cancelled caller holds nothing
open), and publishes it with :func:`publish_file`: cut to its size, fsynced,
renamed over the target, the directory fsynced. A writer that is cancelled or
fails calls :func:`discard_file`, shielded, so nothing partial is left; the
``cleanup_operation`` removes what a killed process left (``*.tmp``).

The blocking functions run through :func:`~autobot.files.run_file_io`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import trio

from .._errors import DeadlineExceeded
from ._io import run_file_io

__all__ = ["discard_file", "publish_file", "temporary_path", "write_at"]


def temporary_path(final: Path) -> Path:
    """A fresh, empty temporary file beside ``final``: ``.<name>.<random>.tmp``, mode 0600."""
    path = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def write_at(path: Path, offset: int, data: bytes, digest: Any = None) -> int:
    """Write ``data`` at ``offset`` of ``path`` (which exists); returns the new end.

    The file is opened for each call, so nothing is left open when the caller
    is cancelled between two writes. ``digest`` (a hashlib object) is fed the data.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)
    finally:
        os.close(fd)
    if digest is not None:
        digest.update(data)
    return offset + len(data)


def publish_file(temporary: Path, final: Path, size: int) -> int:
    """Cut ``temporary`` to ``size``, fsync it, rename it to ``final``, fsync the directory."""
    fd = os.open(temporary, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return size


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


async def discard_file(path: Path) -> None:
    """Remove a temporary file, even while the caller is being cancelled."""
    with trio.CancelScope(shield=True), contextlib.suppress(OSError, DeadlineExceeded):
        await run_file_io(_unlink, path)
