"""Waiting for something another process or task will do, without a fixed sleep."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["eventually"]

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T] | T], interval_s: float = 0.02) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    ``check`` may be a plain function or an async one. For state no Trio
    event signals: a record another process writes, a server's log. It has
    no limit of its own: wrap it in ``trio.fail_after`` so that a test fails
    instead of hanging when the thing never happens::

        with trio.fail_after(5):
            record = await eventually(lambda: operation_status(client, op_id))
    """
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        await trio.sleep(interval_s)
