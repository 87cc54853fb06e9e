"""The server-sent event body: its producer's lifetime, batching and keepalives."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from autobot.api._event_stream import EventStream, format_event


async def test_events_are_formatted_and_queued_ones_leave_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def producer(send: trio.MemorySendChannel[tuple[str, Any]]) -> None:
        await send.send(("token", {"delta": "a"}))
        await trio.sleep(0.5)
        for delta in "bcd":
            await send.send(("token", {"delta": delta}))
        await send.send(("done", {"message": {"content": "abcd"}}))

    body = EventStream(producer)
    async with body:
        first = await anext(body)
        await trio.sleep(1)  # a slow client: meanwhile the rest queues up
        rest = [chunk async for chunk in body]
    assert first == b'event: token\ndata: {"delta":"a"}\n\n'
    assert rest == [
        b"".join(
            [format_event("token", {"delta": d}) for d in "bcd"]
            + [format_event("done", {"message": {"content": "abcd"}})]
        )
    ]


async def test_silence_is_broken_by_keepalive_comments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def producer(send: trio.MemorySendChannel[tuple[str, Any]]) -> None:
        await trio.sleep(40)
        await send.send(("done", {}))

    body = EventStream(producer)
    started = trio.current_time()
    async with body:
        chunks = [(chunk, trio.current_time() - started) async for chunk in body]
    assert chunks == [
        (b": keepalive\n\n", 15),
        (b": keepalive\n\n", 30),
        (b"event: done\ndata: {}\n\n", 40),
    ]


async def test_leaving_cancels_the_producer_and_its_cleanup_never_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cleanup: dict[str, Any] = {}

    async def producer(send: trio.MemorySendChannel[tuple[str, Any]]) -> None:
        try:
            for i in range(10_000):  # far more than the queue holds
                await send.send(("token", {"delta": str(i)}))
            await trio.sleep_forever()
        finally:
            # Like a cut-off answer storing itself and telling the client: shielded.
            with trio.CancelScope(shield=True), trio.move_on_after(1) as bound:
                try:
                    await send.send(("error", {"error": {"code": "answer_cancelled"}}))
                except trio.BrokenResourceError:
                    cleanup["told"] = "nobody is listening"
            cleanup["blocked"] = bound.cancelled_caught

    body = EventStream(producer)
    async with body:
        await anext(body)  # the client reads once, then stops: the queue fills up
        await trio.sleep(5)
    # Leaving the block (the client went away) ended the producer, whose last
    # send failed at once instead of waiting for a reader that will never come.
    assert cleanup == {"told": "nobody is listening", "blocked": False}
