"""A file descriptor shared by file-I/O threads, closed once the last of them is done with it.

A step of file I/O runs in a thread that the caller abandons when ``file.io``
expires or the caller is cancelled (see :mod:`._io`); the thread goes on with
its one call. Closing the descriptor under it would let the kernel hand the
same number to the next ``open`` in the process, and the abandoned ``pread``
or ``write`` would then touch a stranger's file. So a thread *uses* a
:class:`Descriptor` for the length of its call, and :meth:`Descriptor.close`
only marks it: the descriptor is closed at once if nobody uses it, or by the
last user when its call returns.

A descriptor that nobody closed (a result dropped because its step was
abandoned, a response body that was never sent) is closed when it is
garbage-collected.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = ["Descriptor"]


class Descriptor:
    """One open file descriptor; :meth:`use` it from a thread, :meth:`close` it from anywhere."""

    __slots__ = ("_closing", "_fd", "_lock", "_users")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._users = 0
        self._closing = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closing

    @contextmanager
    def use(self) -> Iterator[int]:
        """The descriptor number, valid until the block ends (``EBADF`` once closing)."""
        with self._lock:
            if self._closing:
                raise OSError(errno.EBADF, "the descriptor is closed")
            self._users += 1
        try:
            yield self._fd
        finally:
            with self._lock:
                self._users -= 1
                last = self._closing and self._users == 0
            if last:
                os.close(self._fd)

    def close(self) -> None:
        """Close now, or when the thread using it returns; a second call does nothing."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            idle = self._users == 0
        if idle:
            os.close(self._fd)

    def __del__(self) -> None:
        with suppress(AttributeError, OSError):
            self.close()
