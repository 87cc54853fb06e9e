"""Where one process keeps its keyword index: a directory of its own, locked while in use.

Tantivy allows one writer per index directory, and with Redis several
processes share one data directory, so each process indexes into
``<data>/knowledge/keyword-<pid>-<random>/`` and holds an exclusive ``flock``
on ``keyword-<pid>-<random>.lock`` beside it for as long as it uses it. The
index is built afresh from the stored facts whenever the knowledge service
starts, so nothing in a directory outlives its process: a directory whose
lock anyone can take belongs to a process that is gone, and :func:`claim`
removes it (with its ``.rebuild`` and ``.old`` siblings).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IndexDir", "claim", "new_suffix", "release"]

_NAME = re.compile(r"keyword-([0-9]+-[0-9a-f]+)(\.lock|\.rebuild|\.old)?")


def new_suffix() -> str:
    """A name no other process (nor another app in this one) uses: pid and random."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(slots=True)
class IndexDir:
    """The index directory of one process, and the open lock file that claims it."""

    directory: Path
    lock_fd: int


def _remove(root: Path, suffix: str) -> None:
    for tail in ("", ".rebuild", ".old"):
        shutil.rmtree(root / f"keyword-{suffix}{tail}", ignore_errors=True)


def _sweep(root: Path, own: str) -> None:
    suffixes = {m.group(1) for p in root.iterdir() if (m := _NAME.fullmatch(p.name))}
    for suffix in suffixes - {own}:
        lock = root / f"keyword-{suffix}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its process is alive
        try:
            _remove(root, suffix)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


def claim(root: Path, suffix: str) -> IndexDir:
    """Lock ``root/keyword-<suffix>``, empty it, and remove the directories of dead processes.

    Blocking: run it with :func:`~autobot.files.run_file_io`.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f"keyword-{suffix}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove(root, suffix)
        _sweep(root, suffix)
    except BaseException:
        os.close(fd)
        raise
    return IndexDir(root / f"keyword-{suffix}", fd)


def release(claimed: IndexDir) -> None:
    """Remove the directory and give up its lock. Blocking, like :func:`claim`."""
    try:
        _remove(claimed.directory.parent, claimed.directory.name.removeprefix("keyword-"))
        (claimed.directory.parent / f"{claimed.directory.name}.lock").unlink(missing_ok=True)
    finally:
        os.close(claimed.lock_fd)
