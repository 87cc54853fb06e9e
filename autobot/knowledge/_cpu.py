"""The one limiter for the knowledge base's CPU work in threads (vector search, ...).

Every CPU-heavy step of the knowledge base (a vector search, a large batch
of vector math, a rebuild step) runs through :func:`run_cpu`: in a worker
thread, behind one :class:`trio.CapacityLimiter` of :data:`CPU_THREADS`
tokens, and abandoned on cancellation. A cancelled caller returns at once;
its thread finishes the one call it was given (nothing waits for it) and
holds its token until then, so the limiter keeps counting real CPU use.

The limiter is per Trio run (a :class:`trio.lowlevel.RunVar`), not one
``CapacityLimiter`` object per process: a thread abandoned when its run
ends never reports back, and a process-wide limiter would keep its token
forever (each test is its own run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio
from trio.lowlevel import RunVar

__all__ = ["CPU_THREADS", "cpu_limiter", "run_cpu"]

T = TypeVar("T")

#: Threads doing knowledge-base CPU work at once, per Trio run: the machine's 2 cores.
CPU_THREADS = 2

_limiter: RunVar[trio.CapacityLimiter] = RunVar("autobot.knowledge_cpu_limiter")


def cpu_limiter() -> trio.CapacityLimiter:
    """This run's knowledge-base CPU limiter (created on first use)."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(CPU_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_cpu(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread behind :func:`cpu_limiter`; abandoned if cancelled.

    ``function`` must be safe to abandon: it may only read data that nobody
    changes under it (a snapshot) and must not hold anything another task
    waits for. Put the call inside the caller's deadline.
    """
    return await trio.to_thread.run_sync(
        function, *args, limiter=cpu_limiter(), abandon_on_cancel=True
    )
