"""Automatic pipelining: one connection shared by every task, replies matched in order.

Tasks that issue commands at the same time should not each wait for a round
trip in turn. :class:`SharedConnection` queues each command's bytes and a
:class:`_Waiter` for its replies; whoever finds the write side free sends
everything queued in one ``send``, and whoever finds the read side free reads
replies and hands each to the waiter at the head of the queue. Redis answers
one connection's commands in order, so the queue order *is* the matching.

There is no background task: the roles of writer and reader are taken by the
callers themselves. Alone, a caller writes its command and reads its own reply
at once, which is as lean as an unshared connection. Under concurrency,
a writer that sees other commands in flight yields once before writing, so
that every task runnable at that moment adds its command to the same write.

Cancellation never corrupts the connection:

* a writer cancelled while the kernel buffer is full leaves the unsent
  remainder at the head of the queue of bytes; the next writer continues
  from the exact byte where it stopped (on a TLS connection, bytes already
  encrypted wait in the connection, :attr:`~._connection.Connection.unsent`,
  and the next writer flushes them first);
* a reader cancelled while waiting has consumed nothing half-way (received
  bytes are in the parser, which belongs to the connection);
* a caller cancelled while its reply is owed leaves its waiter in the queue
  marked abandoned: its replies are still read, in order, and dropped. They
  cannot reach another caller, because each waiter takes exactly the number
  of replies its commands produce.

When a role is left (by finishing or by cancellation) and work remains, the
first parked caller is woken to take it over. A broken connection (closed by
the server, an I/O error, a protocol error) fails every waiter at once.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import Any

import trio

from ._connection import Connection, ConnectionLost
from ._protocol import NOT_ENOUGH_DATA

__all__ = ["SharedConnection"]


class _Waiter:
    """The replies one caller expects, and the task to wake when they are in."""

    __slots__ = ("count", "decode", "done", "replies", "task")

    def __init__(self, count: int, decode: bool) -> None:
        self.count = count
        self.decode = decode
        self.replies: list[Any] = []
        self.done = False
        self.task: trio.lowlevel.Task | None = None


def _abort(waiter: _Waiter) -> Any:
    def abort(_: Any) -> trio.lowlevel.Abort:
        waiter.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    return abort


class SharedConnection:
    """A connection that many tasks use at once; see the module docstring."""

    __slots__ = (
        "_failure",
        "_flushing",
        "_outbox",
        "_pending",
        "_reading",
        "commands",
        "connection",
        "writes",
    )

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._pending: deque[_Waiter] = deque()
        self._outbox: list[bytes] = []
        self._flushing = False
        self._reading = False
        self._failure: BaseException | None = None
        self.commands = 0
        self.writes = 0

    @property
    def usable(self) -> bool:
        return self._failure is None

    @property
    def generation(self) -> int:
        return self.connection.generation

    @property
    def in_flight(self) -> int:
        """Callers whose replies are still owed (abandoned ones included)."""
        return len(self._pending)

    async def execute(self, packed: bytes, count: int = 1, decode: bool = True) -> list[Any]:
        """Send ``packed`` (``count`` commands) and return their ``count`` replies.

        Raises :class:`~._connection.ConnectionLost` (or the error that broke
        the connection) if the connection fails before the replies are in.
        Safe to cancel at any point; see the module docstring.
        """
        if self._failure is not None:
            raise self._lost()
        waiter = _Waiter(count, decode)
        self._pending.append(waiter)
        self._outbox.append(packed)
        self.commands += count
        try:
            while not waiter.done:
                if self._failure is not None:
                    raise self._lost()
                if (self._outbox or self.connection.unsent) and not self._flushing:
                    await self._flush()
                elif not self._reading:
                    await self._read_until(waiter)
                else:
                    waiter.task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(_abort(waiter))
        except BaseException:
            waiter.task = None
            raise
        return waiter.replies

    async def _flush(self) -> None:
        self._flushing = True
        try:
            if len(self._pending) > 1:
                # Others are in flight: let every task runnable right now queue
                # its command, so they leave in one write. Shielded: the bytes
                # already queued must go out even if this caller is cancelled.
                await trio.lowlevel.cancel_shielded_checkpoint()
            outbox = self._outbox
            connection = self.connection
            while outbox or connection.unsent:
                if not outbox:
                    # Accepted by a TLS connection, not yet taken by the kernel.
                    await connection.wait_writable()
                    continue
                data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
                outbox.clear()
                self.writes += 1
                sent = connection.send_some(data)
                if sent < len(data):
                    # Keep the exact remainder first in line, then wait; a
                    # cancellation here leaves the stream consistent.
                    outbox.insert(0, data[sent:])
                    await connection.wait_writable()
        except trio.Cancelled:
            raise
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            self._flushing = False
            self._hand_off()

    async def _read_until(self, waiter: _Waiter) -> None:
        self._reading = True
        connection = self.connection
        parser = connection.parser
        pending = self._pending
        # Alone on the connection, with our command just sent: the reply cannot
        # be there yet, so wait before the first recv instead of trying it.
        wait_first = len(pending) == 1
        try:
            while not waiter.done:
                head = pending[0]
                reply = parser.next_reply(head.decode)
                if reply is NOT_ENOUGH_DATA:
                    await connection.receive(wait_first)
                    wait_first = False
                    continue
                head.replies.append(reply)
                if len(head.replies) == head.count:
                    pending.popleft()
                    head.done = True
                    if head.task is not None:
                        trio.lowlevel.reschedule(head.task)
                        head.task = None
        except trio.Cancelled:
            raise
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            self._reading = False
            self._hand_off()

    def _hand_off(self) -> None:
        """Wake the first parked caller if a role is free and there is work for it."""
        if self._failure is not None:
            return
        writing = self._outbox or self.connection.unsent
        if (writing and not self._flushing) or (self._pending and not self._reading):
            for waiter in self._pending:
                if waiter.task is not None:
                    trio.lowlevel.reschedule(waiter.task)
                    waiter.task = None
                    return

    def _lost(self) -> ConnectionLost:
        lost = ConnectionLost(
            errno.ECONNRESET, f"connection to {self.connection.label} failed: {self._failure}"
        )
        lost.__cause__ = self._failure
        return lost

    def fail(self, error: BaseException) -> None:
        """Close the connection and fail every caller still waiting on it."""
        if self._failure is None:
            self._failure = error
        self.connection.close()
        pending, self._pending = self._pending, deque()
        self._outbox.clear()
        for waiter in pending:
            if waiter.task is not None:
                trio.lowlevel.reschedule(waiter.task)
                waiter.task = None
