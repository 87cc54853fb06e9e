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

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._errors import ServiceUnavailable

__all__ = ["Fanout"]

SUBSCRIBER_BUFFER = 1024

_Hook = Callable[[str], Awaitable[None]]


class _Subscriber:
    """One local subscription: a bounded buffer, read as an async iterator."""

    __slots__ = ("channel", "overflowed", "receive", "send")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.send, self.receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        self.overflowed = False

    def __aiter__(self) -> _Subscriber:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            if self.overflowed:
                raise ServiceUnavailable(
                    f"subscriber to {self.channel!r} fell more than "
                    f"{SUBSCRIBER_BUFFER} messages behind",
                    code="subscriber_too_slow",
                ) from None
            raise StopAsyncIteration from None


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
            try:
                subscriber.send.send_nowait(message)
            except trio.WouldBlock:
                subscriber.overflowed = True
                subscriber.send.close()
            except trio.ClosedResourceError:
                pass

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
            subscriber.send.close()
            if not subscribers and self._channels.get(channel) is subscribers:
                del self._channels[channel]
                if self._on_last is not None:
                    with trio.CancelScope(shield=True):
                        await self._on_last(channel)

    def close(self) -> None:
        """End every subscription (their iterators finish)."""
        for subscribers in self._channels.values():
            for subscriber in subscribers:
                subscriber.send.close()
