"""The peak resident memory of a process while something runs, read from ``/proc``.

The kernel keeps the peak (``VmHWM``) itself; writing ``5`` to
``/proc/<pid>/clear_refs`` resets it to the current size, so the peak over a
block is exact, not sampled. Where that reset is not allowed, a sampler reads
``VmRSS`` every few milliseconds instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["peak_rise"]

T = TypeVar("T")

_SAMPLE_S = 0.005


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def _reset_peak(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


async def peak_rise(pid: int, work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """Run ``work()``; return its result and how far ``pid``'s resident memory rose, in bytes."""
    base = _status_kb(pid, "VmRSS")
    exact = _reset_peak(pid)
    peak = base

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _status_kb(pid, "VmRSS"))
            await trio.sleep(_SAMPLE_S)

    async with trio.open_nursery() as nursery:
        if not exact:
            nursery.start_soon(sample)
        result = await work()
        nursery.cancel_scope.cancel()
    if exact:
        peak = _status_kb(pid, "VmHWM")
    return result, (peak - base) * 1024
