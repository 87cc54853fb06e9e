"""Real ``redis-server`` processes for the suite: :mod:`autobot.testing`'s.

``eventually`` here takes a plain predicate and a budget, for state that
lives in another process (a replica's data, a Sentinel's view).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from autobot.testing import (
    RedisProcess,
    RedisProcesses,
    TLSFiles,
    free_port,
    redis_available,
    sentinel_master,
    wait_until,
)
from autobot.testing import eventually as _eventually

__all__ = [
    "RedisProcess",
    "RedisProcesses",
    "TLSFiles",
    "eventually",
    "free_port",
    "redis_available",
    "sentinel_master",
    "wait_until",
]


async def eventually(predicate: Callable[[], Any], what: str, budget_s: float = 5.0) -> None:
    """Poll ``predicate()`` until true; fail with ``trio.TooSlowError`` after ``budget_s``."""
    with trio.fail_after(budget_s):
        await _eventually(predicate, interval_s=0.01)
