"""The ``redis`` entry of ``/api/health``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import Redis

__all__ = ["RedisHealthCheck"]


class RedisHealthCheck:
    """PING Redis and report the breaker's state.

    Not critical: the app serves without Redis (degraded) and Redis comes back
    by itself. The PING runs under ``redis.command`` inside the health runner's
    ``health.check``, whichever is shorter; with the circuit open it fails at
    once with ``RedisUnavailable``, which the report shows as the error.
    """

    name = "redis"
    critical = False

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def check(self) -> dict[str, Any]:
        await self._client.ping()
        return {"breaker": self._client.breaker.state.value}
