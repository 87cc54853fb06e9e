"""background_nursery: the body's exceptions pass through unwrapped."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from autobot import NotFound
from autobot._nursery import background_nursery


async def test_body_exception_is_not_wrapped() -> None:
    stopped = trio.Event()

    async def serve_forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    with pytest.raises(NotFound):
        async with background_nursery() as nursery:
            nursery.start_soon(serve_forever)
            await trio.lowlevel.checkpoint()
            raise NotFound("gone")
    assert stopped.is_set()


async def test_background_tasks_end_with_the_block() -> None:
    cancelled = trio.Event()

    async def serve_forever() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    async with background_nursery() as nursery:
        nursery.start_soon(serve_forever)
        await trio.testing.wait_all_tasks_blocked()
        assert not cancelled.is_set()
    assert cancelled.is_set()


async def test_background_failure_is_reported() -> None:
    async def crash() -> None:
        raise ValueError("background")

    with pytest.RaisesGroup(ValueError):
        async with background_nursery() as nursery:
            nursery.start_soon(crash)
            await trio.sleep_forever()


async def test_outer_cancellation_passes_through() -> None:
    with trio.move_on_after(0.01) as scope:
        async with background_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    assert scope.cancelled_caught
