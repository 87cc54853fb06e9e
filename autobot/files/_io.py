"""Blocking file-system calls, run in a thread behind one limiter, each under ``file.io``.

Trio has no non-blocking file I/O on Linux: every file system call blocks a
thread. The files API and the operations run theirs through
:func:`run_file_io`, so at most :data:`FILE_IO_THREADS` of them are in flight
at once, each bounded by the ``file.io`` scope. A step that expires raises
``DeadlineExceeded`` at once; its thread is abandoned and finishes the one
call on its own (a thread cannot be interrupted), which the limiter still
counts until it returns, so a hung disk cannot gather threads without bound.

Work that reads many small files passes one function that does a batch of
them, so a directory of thousands costs a thread hop per batch, not per file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio
from trio.lowlevel import RunVar

from .._deadlines import deadline

__all__ = ["FILE_IO_THREADS", "run_file_io"]

T = TypeVar("T")

#: Threads doing file-system calls at once, per Trio run.
FILE_IO_THREADS = 4

_limiter: RunVar[trio.CapacityLimiter] = RunVar("autobot.file_io_limiter")


def _current_limiter() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(FILE_IO_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_file_io(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a file-I/O thread, within the ``file.io`` budget."""
    with deadline("file.io"):
        return await trio.to_thread.run_sync(
            function, *args, limiter=_current_limiter(), abandon_on_cancel=True
        )
