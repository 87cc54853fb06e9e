"""Opening connections (the connector) and keeping them (the pool).

:class:`Connector` turns the endpoint source's candidates into one ready
connection: TCP connect (and the TLS handshake for ``rediss://``), then
``AUTH``/``SELECT`` from the URL and, in Sentinel mode, ``ROLE``, all sent in
one write, inside ``redis.connect``.

:class:`ConnectionPool` holds at most ``max_connections`` connections for
commands that need one to themselves (blocking commands, ``WATCH``
transactions, pipelines when automatic pipelining is off), plus the one
:class:`~._autopipeline.SharedConnection` every other command goes through.
Its bookkeeping is synchronous; only opening a connection and the idle
health check wait. A connection comes back with :meth:`ConnectionPool.release`
and is kept only if it is open and from the current endpoint generation;
the command layer closes any connection whose reply was interrupted before
releasing it, so a released connection never owes a reply.
"""

from __future__ import annotations

from typing import Any

import trio
from redis.exceptions import RedisError

from .._deadlines import deadline
from .._errors import DeadlineExceeded, RedisUnavailable
from ._autopipeline import SharedConnection
from ._connection import Connection, ConnectionLost
from ._dial import Dialer
from ._endpoints import Candidate, EndpointSource
from ._failures import RECOVERABLE_ERRORS
from ._protocol import ReplyParser

__all__ = ["ConnectionPool", "Connector"]

_PING = b"*1\r\n$4\r\nPING\r\n"
_ROLE = b"*1\r\n$4\r\nROLE\r\n"
# An idle connection older than this is PINGed (under ``redis.probe``) before
# reuse: long enough that a busy pool never pays for it, short enough that a
# connection cut by a firewall or a server restart is found before a command.
_IDLE_CHECK_AFTER_S = 5.0


class Connector:
    """Opens connections to the node the endpoint source prefers."""

    def __init__(
        self,
        source: EndpointSource,
        handshake: list[bytes],
        *,
        encoding: str | None,
        encoding_errors: str,
        dialer: Dialer | None = None,
    ) -> None:
        self.source = source
        self._handshake = handshake
        self._dialer = dialer or Dialer()
        self._encoding = encoding
        self._errors = encoding_errors
        self.connects = 0
        self.connect_failures = 0

    @property
    def generation(self) -> int:
        return self.source.generation

    async def connect(self) -> Connection:
        """A new ready connection, within ``redis.connect``.

        Tries the candidates in order; one that refuses, fails the handshake or
        (Sentinel mode) says it is a replica is reported to the source and the
        next is tried. Raises :class:`RedisUnavailable` naming every failure.
        """
        problems: list[str] = []
        try:
            with deadline("redis.connect"):
                for candidate in await self.source.candidates():
                    generation = self.source.generation
                    try:
                        connection = await self._open(candidate, generation)
                    except (OSError, RedisError) as error:
                        self.connect_failures += 1
                        problems.append(f"{candidate.label}: {error}")
                        self.source.report_failure(candidate.index)
                        continue
                    self.connects += 1
                    return connection
        except DeadlineExceeded as error:
            self.connect_failures += 1
            problems.append(str(error))
        raise RedisUnavailable("cannot connect to Redis: " + "; ".join(problems))

    async def _open(self, candidate: Candidate, generation: int) -> Connection:
        parser = ReplyParser(self._encoding, self._errors)
        connection = await self._dialer.open(
            candidate.target,
            parser,
            label=candidate.label,
            generation=generation,
            host=candidate.host,
        )
        commands = [*self._handshake, _ROLE] if self.source.check_role else self._handshake
        if not commands and self._dialer.tls:
            # TLS 1.3 reports a refused client certificate only after the
            # handshake, with the first reply: have one, inside redis.connect.
            commands = [_PING]
        try:
            replies = await connection.handshake(commands)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            if self.source.check_role:
                role = replies[-1][0]
                if role not in (b"master", "master"):
                    raise ConnectionLost(0, "refused: the node reports itself a replica")
        except BaseException:
            connection.close()
            raise
        return connection


class ConnectionPool:
    """At most ``max_connections`` exclusive connections, plus the shared one."""

    def __init__(self, connector: Connector, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.connector = connector
        self.max_connections = max_connections
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[Connection] = []
        self._in_use = 0
        self._shared: SharedConnection | None = None
        self._opening: trio.Event | None = None
        self._open_error: BaseException | None = None
        self._closed = False
        self.discarded = 0
        self.idle_checks = 0
        self.shared_opened = 0

    # -- exclusive connections ------------------------------------------------

    async def acquire(self) -> Connection:
        """A connection for one task's exclusive use; give it back with :meth:`release`.

        Waits for a free slot within ``redis.pool`` and connects within
        ``redis.connect``.
        """
        if self._closed:
            raise RedisUnavailable("the Redis client is closed")
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with deadline("redis.pool"):
                await self._slots.acquire()
        try:
            connection = await self._take_idle()
            if connection is None:
                connection = await self.connector.connect()
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        return connection

    async def _take_idle(self) -> Connection | None:
        generation = self.connector.generation
        while self._idle:
            connection = self._idle.pop()
            if connection.closed or connection.generation != generation:
                self._discard(connection)
                continue
            if trio.current_time() - connection.last_used > _IDLE_CHECK_AFTER_S:
                self.idle_checks += 1
                if not await self._responds(connection):
                    self._discard(connection)
                    continue
            return connection
        return None

    async def _responds(self, connection: Connection) -> bool:
        if connection.peer_closed_or_dirty():
            return False
        try:
            with deadline("redis.probe"):
                [reply] = await connection.request(_PING)
        except RECOVERABLE_ERRORS:
            return False
        return not isinstance(reply, Exception)

    def release(self, connection: Connection) -> None:
        """Take back a connection from :meth:`acquire` (closed ones are dropped)."""
        self._in_use -= 1
        self._slots.release()
        if self._closed or connection.closed or connection.generation != self.connector.generation:
            self._discard(connection)
        else:
            connection.last_used = trio.current_time()
            self._idle.append(connection)

    def _discard(self, connection: Connection) -> None:
        connection.close()
        self.discarded += 1

    # -- the shared connection ------------------------------------------------

    def shared_now(self) -> SharedConnection | None:
        """The shared connection if it is usable as it is (no wait)."""
        shared = self._shared
        if (
            shared is not None
            and shared.usable
            and shared.connection.generation == self.connector.source.generation
        ):
            return shared
        return None

    async def shared(self) -> SharedConnection:
        """The shared connection, opened (once, for all callers) if needed."""
        while True:
            shared = self.shared_now()
            if shared is not None:
                return shared
            if self._closed:
                raise RedisUnavailable("the Redis client is closed")
            opening = self._opening
            if opening is not None:
                error = self._open_error
                with deadline("redis.connect"):
                    await opening.wait()
                if self._open_error is not None and self._open_error is not error:
                    raise RedisUnavailable(str(self._open_error)) from self._open_error
                continue
            self._opening = trio.Event()
            try:
                if self._shared is not None:
                    self._shared.fail(ConnectionLost(0, "replaced: the preferred node changed"))
                    self._shared = None
                connection = await self.connector.connect()
                self._shared = SharedConnection(connection)
                self.shared_opened += 1
                self._open_error = None
            except BaseException as error:
                if not isinstance(error, trio.Cancelled):
                    self._open_error = error
                raise
            finally:
                self._opening.set()
                self._opening = None

    # -- lifetime and stats ---------------------------------------------------

    def close(self) -> None:
        """Close every connection; later commands fail with ``RedisUnavailable``."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        if self._shared is not None:
            self._shared.fail(ConnectionLost(0, "the Redis client is closed"))

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and health."""
        shared = self._shared
        return {
            "max_connections": self.max_connections,
            "in_use": self._in_use,
            "idle": len(self._idle),
            "connects": self.connector.connects,
            "connect_failures": self.connector.connect_failures,
            "discarded": self.discarded,
            "idle_checks": self.idle_checks,
            "shared": {
                "opened": self.shared_opened,
                "commands": shared.commands if shared else 0,
                "writes": shared.writes if shared else 0,
                "in_flight": shared.in_flight if shared else 0,
            },
        }
