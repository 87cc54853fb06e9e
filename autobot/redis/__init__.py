"""A Redis client on Trio: pooled, pipelined, cancellation-safe, with failover.

The public surface::

    async with open_redis("redis://127.0.0.1:6379/0", decode_responses=True) as client:
        await client.hset("chat:1", mapping={"title": "Hello"})
        async with client.pipeline() as pipe: ...
        async with client.pubsub() as pubsub: ...

Command methods and reply shapes are redis-py's; the transport, pooling,
deadlines, breaker and failover are AutoBot's. ``docs/redis.md`` describes
the design and the trade-offs of each URL mode.
"""

from .._redis_url import Endpoint, RedisURL, TLSOptions, parse_redis_url
from ._backoff import Backoff
from ._client import Redis
from ._health import RedisHealthCheck
from ._open import default_breaker, open_redis
from ._pipeline import Pipeline
from ._pubsub import PubSub

__all__ = [
    "Backoff",
    "Endpoint",
    "Pipeline",
    "PubSub",
    "Redis",
    "RedisHealthCheck",
    "RedisURL",
    "TLSOptions",
    "default_breaker",
    "open_redis",
    "parse_redis_url",
]
