"""The circuit breaker against a frozen server (SIGSTOP/SIGCONT), and the health check."""

from __future__ import annotations

import pytest
import trio

from autobot import (
    BreakerState,
    CircuitBreaker,
    DeadlineExceeded,
    RedisUnavailable,
    run_health_checks,
)
from autobot.redis import RedisHealthCheck, default_breaker, open_redis
from tests.support.redis_server import RedisProcesses


def quick_breaker() -> CircuitBreaker:
    return CircuitBreaker(
        "redis",
        open_error=lambda remaining: RedisUnavailable(f"circuit open for {remaining:.2f} s"),
        failure_threshold=3,
        cooldown_s=0.3,
    )


async def test_breaker_opens_on_a_frozen_server_and_closes_after_thaw(
    processes: RedisProcesses, set_deadlines
) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"redis.command": 0.1, "redis.connect": 0.1})
    server = processes.redis()
    breaker = quick_breaker()
    async with open_redis(server.url, breaker=breaker) as client:
        await client.set("k", "v")
        server.freeze()
        try:
            for _ in range(3):
                with pytest.raises((DeadlineExceeded, RedisUnavailable)):
                    await client.get("k")
            assert breaker.state is BreakerState.OPEN
            started = trio.current_time()
            with pytest.raises(RedisUnavailable, match="circuit open"):
                await client.get("k")
            assert trio.current_time() - started < 0.05  # failed fast, no deadline waited
            # After the cool-down one probe goes through; still frozen, it re-opens.
            await trio.sleep(0.3)
            with pytest.raises((DeadlineExceeded, RedisUnavailable)):
                await client.get("k")
            assert breaker.state is BreakerState.OPEN
        finally:
            server.thaw()
        await trio.sleep(0.3)
        assert await client.get("k") == b"v"
        assert breaker.state is BreakerState.CLOSED
        snapshot = client.stats()["breaker"]
        assert snapshot["times_opened"] == 2 and snapshot["rejected"] >= 1


async def test_error_replies_do_not_open_the_breaker(processes: RedisProcesses) -> None:
    server = processes.redis()
    async with open_redis(server.url, breaker=quick_breaker()) as client:
        await client.set("text", "x")
        for _ in range(5):
            with pytest.raises(Exception, match="WRONGTYPE"):
                await client.lpush("text", "y")
        assert client.breaker.state is BreakerState.CLOSED


async def test_refused_connections_open_the_breaker(processes: RedisProcesses) -> None:
    server = processes.redis()
    url = server.url
    server.stop()
    async with open_redis(url, breaker=quick_breaker()) as client:
        for _ in range(3):
            with pytest.raises(RedisUnavailable, match="cannot connect"):
                await client.ping()
        assert client.breaker.state is BreakerState.OPEN


async def test_health_check_reports_ok_then_degraded(
    processes: RedisProcesses, set_deadlines
) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"health.check": 0.2, "health": 0.5})
    server = processes.redis()
    async with open_redis(server.url, breaker=default_breaker()) as client:
        check = RedisHealthCheck(client)
        assert (check.name, check.critical) == ("redis", False)
        report = await run_health_checks([check])
        assert report.status == "ok"
        assert report.checks["redis"]["breaker"] == "closed"
        server.freeze()
        try:
            report = await run_health_checks([check])
        finally:
            server.thaw()
        assert report.status == "degraded" and report.http_status == 200
        assert report.checks["redis"]["ok"] is False
        assert "health.check" in report.checks["redis"]["error"]
