"""Publish/subscribe as a cancellable async iterator that survives reconnects.

::

    async with client.pubsub() as pubsub:
        await pubsub.subscribe("events")
        async for message in pubsub:          # {"type": "message", "channel", "data", ...}
            handle(message["data"])

A :class:`PubSub` owns one connection (subscribed connections can run no other
commands). Waiting for a message has no deadline of its own: it lasts as long
as the caller's scopes let it, and cancelling it is always safe (nothing is
half-read: a partial message stays in the connection's parser).

When the connection drops (the server restarted, ``CLIENT KILL``, a failover,
or a garbled reply: any of :data:`~._failures.RECOVERABLE_ERRORS`), the
iterator reconnects with backoff, through the same endpoint logic as the
client (so it follows a Sentinel failover), re-subscribes every channel and
pattern, and goes on. Messages published while it was disconnected are lost:
that is pub/sub's contract, not this client's. A connection silent for longer
than the client's ``pubsub_idle_s`` (an option of ``open_redis``, 30 s by
default) is checked with a ``PING`` that must be answered within
``redis.command``, so a server that vanished without closing the connection
is noticed too.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from .._deadlines import deadline
from .._errors import RedisTimeout, RedisUnavailable
from ._backoff import Backoff
from ._connection import Connection, ConnectionLost
from ._failures import RECOVERABLE_ERRORS, command_deadline
from ._interfaces import SubscriptionHost

__all__ = ["PubSub", "to_message"]

_PING = b"*1\r\n$4\r\nPING\r\n"
_MESSAGE_TYPES = frozenset(("message", "pmessage", "smessage"))
_CONFIRMATIONS = frozenset(("subscribe", "psubscribe"))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def to_message(reply: Any) -> tuple[str, dict[str, Any] | None]:
    """Classify a reply read on a subscribed connection (pure).

    Returns ``(kind, message)``; ``message`` is the redis-py-shaped dict for
    published messages and ``None`` for confirmations and ``PING`` replies.
    """
    if not isinstance(reply, list) or not reply:
        return "other", None
    kind = _text(reply[0])
    if kind == "pmessage":
        return kind, {"type": kind, "pattern": reply[1], "channel": reply[2], "data": reply[3]}
    if kind in _MESSAGE_TYPES:
        return kind, {"type": kind, "pattern": None, "channel": reply[1], "data": reply[2]}
    return kind, None


class PubSub:
    """Subscriptions on a connection of their own; see the module docstring.

    Use it from one task: :meth:`subscribe` from the task that iterates (or
    before iterating). ``channels`` and ``patterns`` are the current
    subscriptions, as encoded bytes; ``reconnects`` counts re-subscriptions
    after a dropped connection. ``client`` is what a subscription needs of the
    client that made it (:class:`~._interfaces.SubscriptionHost`).
    """

    def __init__(self, client: SubscriptionHost) -> None:
        self._client = client
        self._connection: Connection | None = None
        self._messages: deque[dict[str, Any]] = deque()
        self.channels: dict[bytes, None] = {}
        self.patterns: dict[bytes, None] = {}
        self.reconnects = 0
        self._closed = False

    async def __aenter__(self) -> PubSub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; iteration ends."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _keys(self, names: tuple[Any, ...]) -> list[bytes]:
        encode = self._client.encoder.encode
        return [bytes(encode(name)) for name in names]

    # -- subscribing ----------------------------------------------------------

    async def subscribe(self, *channels: Any) -> None:
        """Subscribe to ``channels``; returns once Redis confirmed them."""
        keys = self._keys(channels)
        self.channels.update(dict.fromkeys(keys))
        await self._subscribe("SUBSCRIBE", keys)

    async def psubscribe(self, *patterns: Any) -> None:
        """Subscribe to channels matching glob ``patterns``; returns once confirmed."""
        keys = self._keys(patterns)
        self.patterns.update(dict.fromkeys(keys))
        await self._subscribe("PSUBSCRIBE", keys)

    async def unsubscribe(self, *channels: Any) -> None:
        """Unsubscribe from ``channels`` (all when none are given)."""
        keys = self._keys(channels) or list(self.channels)
        for key in keys:
            self.channels.pop(key, None)
        await self._send_unsubscribe("UNSUBSCRIBE", keys)

    async def punsubscribe(self, *patterns: Any) -> None:
        """Unsubscribe from ``patterns`` (all when none are given)."""
        keys = self._keys(patterns) or list(self.patterns)
        for key in keys:
            self.patterns.pop(key, None)
        await self._send_unsubscribe("PUNSUBSCRIBE", keys)

    @property
    def subscribed(self) -> bool:
        return bool(self.channels or self.patterns)

    def _subscription_commands(self) -> tuple[bytes, int]:
        pack = self._client.pack
        packed, count = b"", 0
        if self.channels:
            packed += pack(("SUBSCRIBE", *self.channels))
            count += len(self.channels)
        if self.patterns:
            packed += pack(("PSUBSCRIBE", *self.patterns))
            count += len(self.patterns)
        return packed, count

    async def _subscribe(self, command: str, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError(f"{command} needs at least one name")
        try:
            with command_deadline():
                if self._connection is None:
                    # Connecting subscribes to everything recorded, these included.
                    count = await self._connect()
                else:
                    count = len(keys)
                    await self._send(self._client.pack((command, *keys)))
                await self._await_confirmations(count)
        except RedisTimeout:
            self._drop()  # confirmations may still be on their way: start afresh
            raise

    async def _send_unsubscribe(self, command: str, keys: list[bytes]) -> None:
        if self._connection is None or not keys:
            return
        with deadline("redis.command"):
            await self._send(self._client.pack((command, *keys)))

    async def _send(self, packed: bytes) -> None:
        connection = self._connection
        assert connection is not None
        try:
            await connection.send_all(packed)
        except BaseException:
            # Half a command on the wire: the connection is done for; the
            # subscriptions are recorded and the iterator re-subscribes them.
            self._drop()
            raise

    async def _await_confirmations(self, count: int) -> None:
        while count > 0:
            reply = await self._read()
            kind, message = to_message(reply)
            if message is not None:
                self._messages.append(message)
            elif kind in _CONFIRMATIONS:
                count -= 1

    async def _read(self) -> Any:
        connection = self._connection
        if connection is None:
            raise RedisUnavailable("the subscription connection was lost")
        try:
            return await connection.read_reply()
        except ConnectionLost as error:
            self._drop()
            raise RedisUnavailable(f"the subscription connection was lost: {error}") from error

    async def _connect(self) -> int:
        """Open the connection and (re)subscribe everything; return confirmations owed."""
        connection = await self._client.connect()
        self._connection = connection
        packed, count = self._subscription_commands()
        if packed:
            await self._send(packed)
        return count

    # -- receiving ------------------------------------------------------------

    def __aiter__(self) -> PubSub:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        return await self.get_message()

    async def get_message(self) -> dict[str, Any]:
        """Wait for the next published message, reconnecting as needed.

        Returns a dict like redis-py's: ``type`` (``message`` or ``pmessage``),
        ``pattern``, ``channel``, ``data``. A checkpoint; safe to cancel.
        """
        while True:
            if self._messages:
                return self._messages.popleft()
            if self._closed:
                raise RedisUnavailable("the subscription is closed")
            if self._connection is None:
                await self._reconnect()
            try:
                reply = await self._read_watching_idle()
            except RECOVERABLE_ERRORS:
                # Lost, silent or garbled: start again on a new connection.
                self._drop()
                continue
            _, message = to_message(reply)
            if message is not None:
                return message

    async def _read_watching_idle(self) -> Any:
        with trio.move_on_after(self._client.pubsub_idle_s):
            return await self._read()
        # Silent for a while: any reply to a PING proves the connection alive.
        with deadline("redis.command"):
            await self._send(_PING)
            return await self._read()

    async def _reconnect(self) -> None:
        backoff = Backoff()
        while True:
            try:
                with deadline("redis.command"):
                    await self._connect()
            except RECOVERABLE_ERRORS:
                self._drop()
                await backoff.sleep()
                continue
            self.reconnects += 1
            return
