"""In-process fan-out: each published message reaches every local subscriber.

The embedded backend publishes straight into it; the Redis backend feeds it
from one shared Redis pub/sub connection, so a process holds one Redis
subscription per channel however many local listeners (WebSocket clients) it has.

Each subscriber has a bounded buffer. Publishing never blocks: a subscriber
whose buffer is full is dropped (its iterator raises ``ServiceUnavailable``),
the way Redis drops a client whose output buffer overflows, so one stuck
listener cannot hold up the others or grow memory without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._errors import ServiceUnavailable

__all__ = ["Fanout"]

SUBSCRIBER_BUFFER = 1024

_Hook = Callable[[str], Awaitable[None]]


class _Subscriber:
    """One local subscription: a bounded buffer, read as an async iterator by one task.

    A deque and the reader's parked task, not a memory channel: a process may
    hold thousands of idle subscriptions (one per WebSocket client), and a
    channel pair with its state and statistics costs several times the memory
    for features one reader never uses.
    """

    __slots__ = ("_buffer", "_closed", "_overflowed", "_reader", "channel")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._buffer: deque[dict[str, Any]] = deque()
        self._closed = False
        self._overflowed = False
        self._reader: trio.lowlevel.Task | None = None

    def put(self, message: dict[str, Any]) -> None:
        """Buffer ``message``; a full buffer ends the subscription instead."""
        if self._closed:
            return
        if len(self._buffer) >= SUBSCRIBER_BUFFER:
            self._overflowed = True
            self.close()
            return
        self._buffer.append(message)
        self._wake()

    def close(self) -> None:
        """End the subscription: the reader drains what is buffered, then stops."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._reader is not None:
            task, self._reader = self._reader, None
            trio.lowlevel.reschedule(task)

    def __aiter__(self) -> _Subscriber:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._reader is not None:
            raise trio.BusyResourceError(f"another task is reading {self.channel!r}")
        if self._buffer or self._closed:
            await trio.lowlevel.checkpoint()
        else:
            self._reader = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                self._reader = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        if self._buffer:
            return self._buffer.popleft()
        if self._overflowed:
            raise ServiceUnavailable(
                f"subscriber to {self.channel!r} fell more than "
                f"{SUBSCRIBER_BUFFER} messages behind",
                code="subscriber_too_slow",
            )
        raise StopAsyncIteration


class Fanout:
    """Local subscribers by channel.

    ``on_first`` / ``on_last`` run when a channel gains its first local
    subscriber or loses its last one (the Redis backend subscribes and
    unsubscribes there).
    """

    def __init__(self, *, on_first: _Hook | None = None, on_last: _Hook | None = None) -> None:
        self._channels: dict[str, set[_Subscriber]] = {}
        self._on_first = on_first
        self._on_last = on_last

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        """Hand ``message`` to every local subscriber of ``channel``; never blocks."""
        for subscriber in self._channels.get(channel, ()):
            subscriber.put(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        subscriber = _Subscriber(channel)
        subscribers = self._channels.setdefault(channel, set())
        first = not subscribers
        subscribers.add(subscriber)
        try:
            if first and self._on_first is not None:
                await self._on_first(channel)
            yield subscriber
        finally:
            subscribers.discard(subscriber)
            subscriber.close()
            if not subscribers and self._channels.get(channel) is subscribers:
                del self._channels[channel]
                if self._on_last is not None:
                    with trio.CancelScope(shield=True):
                        await self._on_last(channel)

    def close(self) -> None:
        """End every subscription (their iterators finish)."""
        for subscribers in self._channels.values():
            for subscriber in subscribers:
                subscriber.close()
