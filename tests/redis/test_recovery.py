"""Recovery follows Redis, not a timer: the breaker's background probe closes the circuit."""

from __future__ import annotations

import math

import pytest
import trio

from autobot import BreakerState, DeadlineExceeded, RedisUnavailable
from autobot.redis import default_breaker, open_redis
from tests.support.redis_server import RedisProcesses, eventually

_FREEZES = 20
# The requirement: the first command succeeds within this of SIGCONT, every time.
_RECOVERY_LIMIT_S = 0.5


@pytest.mark.slow
async def test_first_success_within_half_a_second_of_each_thaw(
    processes: RedisProcesses, set_deadlines
) -> None:  # type: ignore[no-untyped-def]
    # Short budgets keep twenty freezes to a few seconds; the breaker is the
    # production one (5 failures, 5 s cool-down), so only its probe can close
    # it in time.
    set_deadlines({"redis.command": 0.05, "redis.connect": 0.05, "redis.probe": 0.05})
    server = processes.redis()
    breaker = default_breaker()
    async with open_redis(server.url, breaker=breaker) as client:
        await client.set("k", "v")
        successes: list[float] = []
        succeeded = trio.Event()

        async def keep_asking() -> None:
            while True:
                try:
                    await client.get("k")
                    successes.append(trio.current_time())
                    succeeded.set()
                except (RedisUnavailable, DeadlineExceeded):
                    pass
                await trio.sleep(0.005)

        recoveries: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(keep_asking)
            for _ in range(_FREEZES):
                server.freeze()
                try:
                    await eventually(
                        lambda: breaker.state is not BreakerState.CLOSED, "the circuit to open", 2
                    )
                    await trio.sleep(0.05)  # open for a while: probes fail meanwhile
                    succeeded = trio.Event()
                finally:
                    server.thaw()
                thawed = trio.current_time()
                recovered = math.inf
                with trio.move_on_after(2 * _RECOVERY_LIMIT_S):
                    await succeeded.wait()
                    recovered = next(t for t in successes if t > thawed) - thawed
                recoveries.append(recovered)
            nursery.cancel_scope.cancel()
    summary = ", ".join(f"{seconds * 1000:.0f}" for seconds in recoveries)
    assert max(recoveries) < _RECOVERY_LIMIT_S, f"recoveries (ms): {summary}"
    assert breaker.times_opened >= _FREEZES
    assert client.stats()["recovery"]["closes"] >= _FREEZES - 1
    print(f"recoveries after SIGCONT (ms): {summary}")


async def test_a_restarted_server_closes_the_circuit_without_waiting_for_the_cooldown(
    processes: RedisProcesses, set_deadlines
) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"redis.connect": 0.1, "redis.probe": 0.1})
    server = processes.redis()
    breaker = default_breaker()
    async with open_redis(server.url, breaker=breaker) as client:
        await client.ping()
        server.stop()
        for _ in range(5):
            with pytest.raises(RedisUnavailable):
                await client.ping()
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(RedisUnavailable, match=r"at most 5\.0 s more") as refused:
            await client.ping()
        assert refused.value.details["retry_after_s"] == pytest.approx(5.0, abs=0.05)
        await trio.sleep(0.3)  # the probe keeps failing: refused connections
        assert client.stats()["recovery"]["failures"] >= 2
        server.start()
        restarted = trio.current_time()
        await eventually(lambda: breaker.state is BreakerState.CLOSED, "the probe to close it", 1)
        assert trio.current_time() - restarted < 0.5  # not the 5 s cool-down
        assert await client.ping() is True
        assert breaker.snapshot()["closed_by_probe"] == 1
