"""A nursery for background tasks that serve the body of an ``async with`` block.

Resources such as the store or the Redis client own tasks (a journal writer, a
pub/sub relay) that live exactly as long as the block using them. With a plain
nursery, an exception raised by the *body* of such a block would come out
wrapped in an ``ExceptionGroup`` (Trio's strict exception groups), and every
caller would have to unwrap a ``NotFound``. Here the body's exception passes
through as itself; the background tasks are cancelled when the body ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["background_nursery"]


@asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """Yield a nursery whose tasks are cancelled when the block ends.

    An exception from the block propagates unwrapped; one from a background
    task propagates in an ``ExceptionGroup``, as from any nursery.
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        except BaseException as error:  # noqa: ASYNC103 - re-raised below, outside the nursery
            body_error = error
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
