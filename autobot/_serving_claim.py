"""One process per embedded data dir: the claim a serving process takes on it.

The embedded store belongs to one process. Its journal locks ``<data>/store/LOCK``
while open, but a second process finding it locked only retries (its
``/api/health`` answers 503 meanwhile), which is right for an ``export`` that
will finish soon and wrong for a second server or Hypercorn worker, which
would never serve. So a process that serves holds ``<data>/store/SERVING`` for
its whole life, and one that finds it (or the journal's lock) taken refuses to
start with one line naming ``AUTOBOT_REDIS_URL``: several processes need a
shared Redis. ``run.py`` and every ``autobot.asgi`` worker take the claim.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from ._config import Settings
from ._logging import log_fields
from .storage import store_directory

__all__ = ["JOURNAL_LOCK", "SERVING_LOCK", "Refused", "claim_embedded_store"]

log = logging.getLogger("autobot.server")

# Held by the process that serves an embedded data dir, for as long as it lives.
SERVING_LOCK = "SERVING"
# The embedded journal's own lock (autobot.storage's Journal), held while its store is open.
JOURNAL_LOCK = "LOCK"


class Refused(Exception):
    """This process must not serve; ``str()`` is the one line to print."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _in_use(directory: Path, lock: Path) -> Refused:
    return Refused(
        f"AUTOBOT_REDIS_URL: unset, and the embedded store {directory} is in use by another"
        f" AutoBot process{_holder(lock)}; several workers or processes need"
        " AUTOBOT_REDIS_URL (a shared Redis)"
    )


def claim_embedded_store(settings: Settings) -> int | None:
    """Keep other processes off this embedded data dir; the lock's file descriptor.

    Raises :class:`Refused` when another process serves it already: one that
    went through here (it holds ``SERVING``), or ``run.py`` or an ``export``
    (they hold the journal's ``LOCK`` while their store is open; probed and
    released again, since this process's own store takes it next). ``None``
    when the directory cannot be used at all: the services then start anyway
    and ``/api/health`` answers ``down`` saying why, as under ``run.py``.
    """
    directory = store_directory(settings)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / SERVING_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        log.error("data dir unusable", extra=log_fields(error=str(error)))
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        probe = os.open(directory / JOURNAL_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(directory, directory / JOURNAL_LOCK) from None
        finally:
            os.close(probe)  # closing releases the probe's lock
    except BlockingIOError:
        os.close(fd)
        raise _in_use(directory, directory / SERVING_LOCK) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
