"""``open_redis``: build a client from a URL and own its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from redis._parsers.encoders import Encoder

from .._breaker import CircuitBreaker
from .._errors import RedisUnavailable
from .._redis_url import RedisURL, parse_redis_url
from ._client import DEFAULT_BLOCK_MARGIN_S, DEFAULT_PUBSUB_IDLE_S, Redis
from ._dial import Dialer
from ._endpoints import EndpointSource, NodeList, SentinelSource
from ._pool import ConnectionPool, Connector
from ._protocol import pack_command
from ._recovery import PROBE_INTERVAL_S

__all__ = ["default_breaker", "open_redis"]

_DEFAULT_MAX_CONNECTIONS = 32
# Five failures in a row is a pattern rather than a blip. The cool-down only
# matters when the background probe cannot tell (it closes the circuit as
# soon as Redis answers, see _recovery): after it, one caller probes anyway.
_FAILURE_THRESHOLD = 5
_COOLDOWN_S = 5.0


def default_breaker() -> CircuitBreaker:
    """The breaker a client gets unless one is passed to :func:`open_redis`.

    Its refusal says how long a call is refused at most; the client's
    background probe (running while the circuit is open) usually closes it
    sooner, within about 0.1 s of Redis answering again.
    """
    return CircuitBreaker(
        "redis",
        open_error=lambda wait_s: RedisUnavailable(
            f"Redis circuit open: failing fast for at most {wait_s:.1f} s more "
            "(closed as soon as a background probe gets an answer)",
            retry_after_s=round(wait_s, 3),
        ),
        failure_threshold=_FAILURE_THRESHOLD,
        cooldown_s=_COOLDOWN_S,
        probe_retry_s=PROBE_INTERVAL_S,
    )


def _handshake(url: RedisURL) -> list[bytes]:
    encoder = Encoder("utf-8", "strict", False)
    commands: list[bytes] = []
    if url.password is not None:
        auth = ("AUTH", url.username, url.password) if url.username else ("AUTH", url.password)
        commands.append(pack_command(auth, encoder))
    if url.db:
        commands.append(pack_command(("SELECT", url.db), encoder))
    return commands


def _source(url: RedisURL, handshake: list[bytes], dialer: Dialer) -> EndpointSource:
    if url.mode == "sentinel":
        assert url.service_name is not None
        return SentinelSource(url.endpoints, url.service_name, dialer=dialer)
    return NodeList(url.endpoints, probe=url.mode == "failover", handshake=handshake, dialer=dialer)


@asynccontextmanager
async def open_redis(
    url: str | RedisURL,
    *,
    decode_responses: bool = False,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    max_connections: int = _DEFAULT_MAX_CONNECTIONS,
    autopipeline: bool = True,
    breaker: CircuitBreaker | None = None,
    block_margin_s: float = DEFAULT_BLOCK_MARGIN_S,
    pubsub_idle_s: float = DEFAULT_PUBSUB_IDLE_S,
) -> AsyncIterator[Redis]:
    """A :class:`Redis` client for ``url``, closed when the block ends.

    ``url`` is anything :func:`parse_redis_url` accepts (``ValueError`` if
    not). Background work (failover probes, Sentinel polling, the probe that
    closes the circuit breaker as soon as Redis answers again) runs in a
    nursery of this context manager and stops with it. Nothing connects up
    front: the first command connects, so a Redis that is down at start-up
    makes commands fail (and the breaker open), not the start-up itself.
    Host names are resolved here, once. For ``rediss://`` URLs the TLS
    context is built here too, so a CA or certificate file that cannot be
    loaded is a ``ValueError`` now rather than a failure of every connect.

    ``max_connections`` bounds the pool of connections used one task at a
    time (blocking commands, ``WATCH``, and every command when
    ``autopipeline=False``); the shared, pipelined connection is one more.

    Two settings that are not deadlines (no wait ends when they run out):
    ``block_margin_s`` (0.1 s) is how long before the caller's deadline a
    blocking command's server-side timeout ends, so that Redis's empty reply
    arrives before the caller's deadline fires; ``pubsub_idle_s`` (30 s) is
    how long a subscribed connection may be silent before a ``PING`` checks
    that it is alive. ``ValueError`` unless both are positive.
    """
    parsed = parse_redis_url(url) if isinstance(url, str) else url
    handshake = _handshake(parsed)
    dialer = Dialer.for_options(parsed.tls)
    source = _source(parsed, handshake, dialer)
    connector = Connector(
        source,
        handshake,
        encoding=encoding if decode_responses else None,
        encoding_errors=encoding_errors,
        dialer=dialer,
    )
    pool = ConnectionPool(connector, max_connections)
    client = Redis(
        pool,
        breaker=breaker or default_breaker(),
        encoding=encoding,
        encoding_errors=encoding_errors,
        decode_responses=decode_responses,
        autopipeline=autopipeline,
        block_margin_s=block_margin_s,
        pubsub_idle_s=pubsub_idle_s,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        await nursery.start(client.recovery.run)
        try:
            yield client
        finally:
            pool.close()
            nursery.cancel_scope.cancel()
