"""One Redis connection: a non-blocking socket driven by Trio, and its reply parser.

The socket is a plain non-blocking stdlib socket waited on with
``trio.lowlevel.wait_readable``/``wait_writable``. That keeps the per-command
path to one ``send`` system call, one ``recv_into`` and one wait, and, more
importantly, makes it exact about what was sent: a partial send is visible
to the caller (:meth:`Connection.send_some`), which is what lets the shared
connection of :mod:`._autopipeline` survive a cancelled writer without ever
putting half a command on the wire.

A :class:`Connection` holds no lock and knows no policy. Whoever uses it
follows one rule: if an operation on it is interrupted after a command was
sent and before its whole reply was read, the connection is closed
(:meth:`close`) and never used again, because the rest of that reply would
reach the next command. Receiving is itself atomic (``recv_into`` either
took bytes into the parser's buffer or did not), so the state to protect is
only "which replies are still owed", never a torn read.

A TLS connection (:class:`~._tls.TLSConnection`) is a subclass with the same
interface; the one addition both share is :attr:`Connection.unsent`, the bytes
a connection has accepted but not yet handed to the kernel (always 0 here).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import Any

import trio

from ._protocol import NOT_ENOUGH_DATA, ReplyParser

__all__ = ["Connection", "ConnectionLost", "Target", "connect_socket"]

_READ_SIZE = 64 * 1024

# (family, sockaddr) as returned by getaddrinfo: where to connect, already resolved.
Target = tuple[int, Any]


class ConnectionLost(OSError):
    """The server closed the connection, or it broke, while a reply was owed."""


async def connect_socket(target: Target, label: str) -> socket.socket:
    """A connected non-blocking TCP socket; the caller bounds the wait (``redis.connect``).

    Raises ``OSError`` if the connection is refused or fails. Cancelling it
    closes the half-open socket.
    """
    family, sockaddr = target
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect(sockaddr)
            in_progress = False
        except BlockingIOError:
            in_progress = True
        if in_progress:
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connect to {label}: {os.strerror(code)}")
        else:
            await trio.lowlevel.checkpoint()
    except BaseException:
        sock.close()
        raise
    return sock


class Connection:
    """A connected socket to one Redis node, with the parser for its replies.

    ``label`` names the node for errors and stats (``host:port``);
    ``generation`` is the endpoint generation the connection was opened in,
    so a pool can tell connections to a former master from current ones.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_sock",
        "generation",
        "label",
        "last_used",
        "parser",
    )

    def __init__(self, sock: socket.socket, parser: ReplyParser, label: str, generation: int):
        self._sock = sock
        self._buffer = bytearray(_READ_SIZE)
        self._closed = False
        self.parser = parser
        self.label = label
        self.generation = generation
        self.last_used = trio.current_time()

    @classmethod
    async def open(
        cls, target: Target, parser: ReplyParser, *, label: str, generation: int
    ) -> Connection:
        """Connect to ``target``; the caller bounds the wait (``redis.connect``).

        Raises ``OSError`` if the connection is refused or fails. Cancelling
        it closes the half-open socket.
        """
        return cls(await connect_socket(target, label), parser, label, generation)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close now. Safe to call twice; wakes any task waiting on the socket.

        Synchronous on purpose: it is called from ``except`` and ``finally``
        blocks of cancelled tasks, where an ``await`` would raise again. It
        also works outside a Trio run (an async generator finalized by the
        garbage collector closes its subscription there), where no task can
        be waiting on the socket.
        """
        if not self._closed:
            self._closed = True
            try:
                trio.lowlevel.notify_closing(self._sock)
            except RuntimeError:  # not inside a Trio run: nobody to wake
                pass
            self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionLost(errno.EBADF, f"connection to {self.label} is closed")

    @property
    def unsent(self) -> int:
        """Bytes accepted by :meth:`send_some` that the kernel has not taken yet.

        Always 0 on a plain connection (what ``send`` accepted, the kernel
        took). A TLS connection encrypts what it accepts and may hold the
        ciphertext until the socket is writable; whoever writes keeps waiting
        (:meth:`wait_writable`) until this is 0, so that accepted bytes
        always reach the server.
        """
        return 0

    def send_some(self, data: bytes | memoryview) -> int:
        """Send what the kernel takes now, without waiting; returns the byte count.

        Every byte counted is committed, in order: the caller keeps the rest
        and never sends a counted byte again.
        """
        self._check_open()
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise ConnectionLost(error.errno, f"sending to {self.label}: {error}") from error

    async def wait_writable(self) -> None:
        """Wait until the kernel takes more bytes (a checkpoint; safe to cancel)."""
        self._check_open()
        try:
            await trio.lowlevel.wait_writable(self._sock)
        except trio.ClosedResourceError:
            raise ConnectionLost(errno.EBADF, f"connection to {self.label} closed") from None

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``. If cancelled midway the caller must :meth:`close`."""
        sent = self.send_some(data)
        if sent == len(data) and not self.unsent:
            return
        view = memoryview(data)
        while sent < len(data):
            await self.wait_writable()
            sent += self.send_some(view[sent:])
        while self.unsent:
            await self.wait_writable()

    async def receive(self, wait_first: bool = False) -> None:
        """Wait for bytes and feed them to the parser (a checkpoint; safe to cancel).

        ``wait_first`` skips the first, speculative ``recv``: right after sending
        a lone command the reply cannot be there yet, and a failed ``recv`` is
        a wasted system call on the hottest path.

        Cancellation leaves nothing half-read: either ``recv_into`` ran and the
        bytes are in the parser, or it did not run. Raises :class:`ConnectionLost`
        when the server closed the connection.
        """
        self._check_open()
        sock = self._sock
        while True:
            if wait_first:
                wait_first = False
            else:
                try:
                    count = sock.recv_into(self._buffer)
                except BlockingIOError:
                    pass
                except OSError as error:
                    raise ConnectionLost(
                        error.errno, f"receiving from {self.label}: {error}"
                    ) from error
                else:
                    break
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                raise ConnectionLost(errno.EBADF, f"connection to {self.label} closed") from None
        if count == 0:
            raise ConnectionLost(errno.ECONNRESET, f"{self.label} closed the connection")
        self.parser.feed(self._buffer, count)

    async def read_reply(self, decode: bool = True, wait_first: bool = False) -> Any:
        """The next reply, waiting for its bytes as needed.

        An error reply is returned as an exception instance, not raised. If this
        is cancelled before the reply is complete, the reply is still owed: the
        caller closes the connection (or, as the shared connection does, keeps
        count of owed replies and discards them in order).
        """
        reply = self.parser.next_reply(decode)
        while reply is NOT_ENOUGH_DATA:
            await self.receive(wait_first)
            wait_first = False
            reply = self.parser.next_reply(decode)
        return reply

    async def request(self, packed: bytes, count: int = 1, decode: bool = True) -> list[Any]:
        """Send ``packed`` (``count`` commands) and read their ``count`` replies.

        For connections used by one task at a time. Any exception, cancellation
        included, closes the connection before propagating: the replies still
        owed must not reach the next user.
        """
        try:
            await self.send_all(packed)
            replies = [await self.read_reply(decode, index == 0) for index in range(count)]
        except BaseException:
            self.close()
            raise
        self.last_used = trio.current_time()
        return replies

    def peer_closed_or_dirty(self) -> bool:
        """Whether an idle connection is unusable: closed by the server, or holding
        bytes nobody asked for. One non-blocking ``recv(MSG_PEEK)``; no wait."""
        if self._closed:
            return True
        if self.parser.has_data():
            return True
        try:
            data = self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True
        # b"": the server closed it; anything else: bytes no command asked for.
        del data
        return True

    async def handshake(self, commands: Sequence[bytes]) -> list[Any]:
        """Send the set-up commands (AUTH, SELECT, ROLE) together; return their replies."""
        if not commands:
            return []
        return await self.request(b"".join(commands), len(commands))
