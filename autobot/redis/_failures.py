"""How Redis failures are named: the command deadlines, and what the breaker counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import trio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from .._deadlines import current_deadlines, deadline
from .._errors import DeadlineExceeded, RedisTimeout, RedisUnavailable

__all__ = [
    "RECOVERABLE_ERRORS",
    "blocking_deadline",
    "command_deadline",
    "connection_lost",
    "is_failure",
]

#: What a background loop (failover probes, Sentinel polling, the breaker's
#: probe, a subscription's reconnects) handles and goes on after: refused,
#: lost or TLS-failed connections (``OSError``, ``ConnectionLost``), Redis
#: being unreachable, an expired deadline, and a garbled reply
#: (``InvalidResponse``). Anything else is a programming error and propagates.
RECOVERABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    RedisUnavailable,
    DeadlineExceeded,
    RedisConnectionError,
    InvalidResponse,
)


def connection_lost(error: OSError) -> RedisUnavailable:
    """How a connection that broke while replies were owed is reported to callers."""
    return RedisUnavailable(f"Redis connection lost: {error}")


class command_deadline:
    """``deadline("redis.command")``, whose expiry is a :class:`RedisTimeout`.

    A Redis that does not answer in time is, to a client, an unavailable one
    (503 ``redis_unavailable``), still naming the scope and its budget. A class
    rather than a generator: it bounds every command, and costs less this way.
    """

    __slots__ = ("_deadline",)

    def __enter__(self) -> trio.CancelScope:
        self._deadline = deadline("redis.command")
        return self._deadline.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        try:
            return self._deadline.__exit__(exc_type, exc, traceback)
        except DeadlineExceeded as error:
            if error.scope != "redis.command":
                raise
            raise RedisTimeout(error.scope, error.deadline_s) from None


@contextmanager
def blocking_deadline(server_s: float) -> Iterator[None]:
    """The wait for a blocking command's reply: its server-side timeout, then ``redis.blocking``.

    Redis itself ends a ``BLPOP`` or ``XREAD BLOCK`` after ``server_s`` with an
    empty reply, so that part of the wait is the caller's (its deadline chose
    ``server_s``). What this scope bounds is the round trip after it: the time
    from the server-side timeout running out to its reply arriving. So its
    budget is counted from ``started + server_s``, and only that lateness is
    recorded in the ``redis.blocking`` histogram, for replies that came after
    the server-side timeout (a reply that came earlier, with data, says nothing
    about the margin). Expiry is a :class:`RedisTimeout` naming
    ``redis.blocking``: Redis should have answered and did not. An enclosing
    scope that ends first wins, as with every scope, and records nothing here.
    """
    scope = current_deadlines()["redis.blocking"]
    budget_s = scope.budget_s
    server_done = trio.current_time() + server_s
    with trio.CancelScope(deadline=server_done + budget_s) as cancel_scope:
        yield
    now = trio.current_time()
    if cancel_scope.cancelled_caught and now >= cancel_scope.deadline:
        scope.histogram.record(budget_s, expired=True)
        raise RedisTimeout("redis.blocking", budget_s)
    if now >= server_done:
        scope.histogram.record(now - server_done)


# Deadlines whose expiry means Redis (or the way to it) is not answering;
# waiting for a pool slot (``redis.pool``) says the app is busy, not Redis.
_REDIS_DEADLINES = frozenset(("redis.command", "redis.connect", "redis.blocking"))


def is_failure(error: BaseException) -> bool:
    """Whether ``error`` counts towards opening the breaker.

    Refused, lost or garbled connections and expired Redis deadlines do.
    Error replies (``WRONGTYPE``, ``NOSCRIPT``, ...) do not: Redis answered.
    """
    if isinstance(error, DeadlineExceeded):
        return error.scope in _REDIS_DEADLINES
    return isinstance(error, RedisUnavailable | OSError | RedisConnectionError | InvalidResponse)
