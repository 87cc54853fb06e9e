"""Which exceptions say "Redis is unreachable", for the circuit breaker."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from .._errors import DeadlineExceeded, RedisUnavailable

__all__ = ["is_failure"]

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
