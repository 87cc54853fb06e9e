"""An httpx transport whose connection pool costs the same with one answer streaming or a thousand.

httpcore's pool re-examines every connection it holds whenever a request
starts or a response closes (``_assign_requests_to_connections``), so with N
answers streaming each request costs O(N) and a burst of N requests O(N²):
with 500 WebSocket chats streaming at once it was a sixth of the server's CPU
(``docs/benchmarks.md``). LLM streams are long HTTP/1.1 exchanges, one per
connection, to one or two origins, so a stack of idle connections per origin
does the same job at a constant cost: a request takes the most recently used
idle connection that is still good, or opens a new one; a response that
closes with its connection reusable puts it back, and the oldest idle one
beyond ``max_keepalive_connections`` is closed.

Only the pool changes: connections are httpcore's own (``create_connection``),
so TLS, tracing, keep-alive expiry and cancellation safety stay theirs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import cast

import httpcore
import httpx
import trio

from .._deadlines import deadline
from .._errors import DeadlineExceeded

__all__ = ["StreamingTransport"]


class StreamingTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` over a :class:`_StreamingPool`.

    ``max_connections`` bounds the requests in flight (a request waits for a
    slot, inside the caller's deadline); idle connections come on top.
    """

    def __init__(self, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        # httpx keeps its pool in ``_pool`` and calls only the methods of
        # httpcore's interface on it; the version is pinned in pyproject.toml.
        if not isinstance(self._pool, httpcore.AsyncConnectionPool):
            raise TypeError("httpx's transport no longer keeps an httpcore pool in _pool")
        self._pool = _StreamingPool(self._pool, limits)


class _StreamingPool(httpcore.AsyncConnectionPool):
    def __init__(self, configured: httpcore.AsyncConnectionPool, limits: httpx.Limits) -> None:
        super().__init__(
            ssl_context=configured._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )
        self._slots = trio.Semaphore(limits.max_connections or 1_000_000)
        self._idle: dict[_OriginKey, deque[httpcore.AsyncConnectionInterface]] = {}
        self._busy: set[httpcore.AsyncConnectionInterface] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if request.url.scheme not in (b"http", b"https"):
            raise httpcore.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{request.url.scheme.decode()}://'."
            )
        origin = request.url.origin
        await self._slots.acquire()
        try:
            connection = await self._checkout(origin)
        except BaseException:
            self._slots.release()
            raise
        try:
            try:
                response = await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                # An idle connection the server closed after it was checked.
                self._busy.discard(connection)
                connection = self._open_connection(origin)
                response = await connection.handle_async_request(request)
        except BaseException:
            await self._release(connection, origin)  # noqa: ASYNC102 - closes shielded, under llm.close
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ReleasingStream(
                cast(AsyncIterable[bytes], response.stream), self, connection, origin
            ),
            extensions=response.extensions,
        )

    async def _checkout(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        idle = self._idle.get(_key(origin))
        while idle:
            connection = idle.pop()
            if connection.is_available() and not connection.has_expired():
                self._busy.add(connection)
                return connection
            await _close_shielded(connection.aclose)
        return self._open_connection(origin)

    def _open_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        connection = self.create_connection(origin)
        self._busy.add(connection)
        return connection

    async def _release(
        self, connection: httpcore.AsyncConnectionInterface, origin: httpcore.Origin
    ) -> None:
        """Give the request's slot back, and keep its connection if it can serve another."""
        if connection not in self._busy:
            return
        self._busy.discard(connection)
        self._slots.release()
        if connection.is_closed() or not connection.is_idle():
            return  # httpcore closed it: the body was not read to its end, or the exchange failed
        self._idle.setdefault(_key(origin), deque()).append(connection)
        while sum(map(len, self._idle.values())) > self._max_keepalive_connections:
            await _close_shielded(self._oldest_idle().aclose)

    def _oldest_idle(self) -> httpcore.AsyncConnectionInterface:
        origin, idle = next((o, q) for o, q in self._idle.items() if q)
        connection = idle.popleft()
        if not idle:
            del self._idle[origin]
        return connection

    @property
    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        return [*self._busy, *(c for idle in self._idle.values() for c in idle)]

    async def aclose(self) -> None:
        connections = self.connections
        self._busy.clear()
        self._idle.clear()
        for connection in connections:
            await _close_shielded(connection.aclose)


class _ReleasingStream:
    """A response body that hands its connection back to the pool when closed."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        pool: _StreamingPool,
        connection: httpcore.AsyncConnectionInterface,
        origin: httpcore.Origin,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._origin = origin
        self._closed = False
        self._parts: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._parts = aiter(self._stream)
        return self

    async def __anext__(self) -> bytes:
        try:
            assert self._parts is not None
            return await anext(self._parts)
        except StopAsyncIteration:
            raise
        except BaseException:
            await self.aclose()  # noqa: ASYNC102 - shielded inside
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._stream, "aclose", None)
        try:
            if close is not None:
                await _close_shielded(close)
        finally:
            # Its only waits are shielded closes: it completes in a cancelled task too.
            await self._pool._release(self._connection, self._origin)  # noqa: ASYNC102


_OriginKey = tuple[bytes, bytes, int]


def _key(origin: httpcore.Origin) -> _OriginKey:
    return (origin.scheme, origin.host, origin.port)  # Origin itself is not hashable


async def _close_shielded(close: Callable[[], Awaitable[object]]) -> None:
    """Run ``close`` shielded from cancellation, bounded by ``llm.close``."""
    with trio.CancelScope(shield=True):
        try:
            with deadline("llm.close"):
                await close()
        except DeadlineExceeded:
            pass
