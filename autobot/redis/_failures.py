"""How Redis failures are named: the command deadline, and what the breaker counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from .._deadlines import deadline
from .._errors import DeadlineExceeded, RedisTimeout, RedisUnavailable

__all__ = ["command_deadline", "is_failure"]


@contextmanager
def command_deadline() -> Iterator[trio.CancelScope]:
    """``deadline("redis.command")``, whose expiry is a :class:`RedisTimeout`.

    A Redis that does not answer in time is, to a client, an unavailable one
    (503 ``redis_unavailable``), still naming the scope and its budget.
    """
    try:
        with deadline("redis.command") as scope:
            yield scope
    except DeadlineExceeded as error:
        if error.scope != "redis.command":
            raise
        raise RedisTimeout(error.scope, error.deadline_s) from None


# Deadlines whose expiry means Redis (or the way to it) is not answering;
# waiting for a pool slot (``redis.pool``) says the app is busy, not Redis.
_REDIS_DEADLINES = frozenset(("redis.command", "redis.connect"))


def is_failure(error: BaseException) -> bool:
    """Whether ``error`` counts towards opening the breaker.

    Refused, lost or garbled connections and expired Redis deadlines do.
    Error replies (``WRONGTYPE``, ``NOSCRIPT``, ...) do not: Redis answered.
    """
    if isinstance(error, DeadlineExceeded):
        return error.scope in _REDIS_DEADLINES
    return isinstance(error, RedisUnavailable | OSError | RedisConnectionError | InvalidResponse)
