"""Waiting for something another process or task will do, without a fixed sleep."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["eventually"]

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], interval_s: float = 0.02) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Has no limit of its own: wrap it in ``trio.fail_after`` so a test fails
    instead of hanging when the thing never happens.
    """
    while True:
        result = await check()
        if result:
            return result
        await trio.sleep(interval_s)
