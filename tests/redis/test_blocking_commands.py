"""Blocking commands: server-side timeouts from the deadline, and cancellation."""

from __future__ import annotations

import pytest
import trio

from autobot import SCOPES, DeadlineExceeded, DeadlineTable, RedisTimeout, deadline
from autobot.redis import Redis, open_redis
from tests.support.redis_server import RedisProcess, RedisProcesses, eventually


async def test_blpop_returns_what_another_task_pushes(client: Redis) -> None:
    async with trio.open_nursery() as nursery:

        async def push_later() -> None:
            await trio.sleep(0.05)
            await client.rpush("queue", "job")

        nursery.start_soon(push_later)
        with trio.fail_after(2):
            assert await client.blpop(["queue"]) == ("queue", "job")


async def test_blpop_ends_with_the_callers_deadline(client: Redis, set_deadlines) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"http.request": 0.3})
    started = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught, deadline("http.request"):
        # The server was told to give up 0.1 s (the client's block_margin_s)
        # before the deadline, so the empty reply arrives in time: None.
        assert await client.blpop(["empty"]) is None
        await trio.sleep_forever()
    assert caught.value.scope == "http.request"
    # The connection came back whole: the reply was read, not cut off.
    stats = client.stats()["pool"]
    assert stats["idle"] == 1 and stats["discarded"] == 0
    assert 0.15 < trio.current_time() - started < 1.0


async def test_cancelled_blpop_closes_its_connection(
    client: Redis, shared_redis: RedisProcess
) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_soon() -> None:
                await trio.sleep(0.1)
                scope.cancel()

            nursery.start_soon(cancel_soon)
            await client.blpop(["nothing"])  # no deadline at all: waits until cancelled
    assert scope.cancelled_caught
    assert client.stats()["pool"]["discarded"] == 1

    def blocked() -> int:
        info = shared_redis.command("INFO", "clients")
        return int(info.split("blocked_clients:")[1].split()[0])

    await eventually(lambda: blocked() == 0, "the server to free the blocked client", 2)
    await client.rpush("nothing", "x")
    assert await client.lpop("nothing") == "x"  # nobody blocked took it


async def test_bzpopmin_and_xread_block(client: Redis) -> None:
    with trio.move_on_after(0.3):
        assert await client.bzpopmin(["zset"]) is None
        assert await client.xread({"stream": "$"}, block=0) == []
    await client.zadd("zset", {"m": 1})
    assert await client.bzpopmin(["zset"], timeout=1) == ("zset", "m", 1.0)

    async with trio.open_nursery() as nursery:

        async def add_later() -> None:
            await trio.sleep(0.05)
            await client.xadd("stream", {"f": "v"})

        nursery.start_soon(add_later)
        with trio.fail_after(2):
            reply = await client.xread({"stream": "$"}, block=0)
    assert reply[0][0] == "stream" and reply[0][1][0][1] == {"f": "v"}


async def test_the_reply_after_the_server_side_timeout_is_recorded_under_its_own_scope(
    client: Redis, fresh_deadlines: DeadlineTable
) -> None:
    assert await client.blpop(["empty"], timeout=0.05) is None
    blocking = fresh_deadlines["redis.blocking"].stats()
    # One observation: how late the empty reply came after the 50 ms Redis waited.
    assert blocking["count"] == 1 and blocking["expired"] == 0
    assert 0 <= blocking["max_s"] < 0.5
    assert fresh_deadlines["redis.command"].stats()["count"] == 0


async def test_a_silent_server_after_the_server_side_timeout_names_redis_blocking(
    processes: RedisProcesses, set_deadlines
) -> None:  # type: ignore[no-untyped-def]
    table = set_deadlines({"redis.blocking": 0.2})
    server = processes.redis()
    async with open_redis(server.url) as client:
        await client.ping()
        server.freeze()
        try:
            started = trio.current_time()
            with pytest.raises(RedisTimeout) as caught:
                await client.blpop(["empty"], timeout=0.1)  # no deadline of the caller's
            waited = trio.current_time() - started
        finally:
            server.thaw()
        assert (caught.value.scope, caught.value.deadline_s) == ("redis.blocking", 0.2)
        # Redis's own 0.1 s, then the scope's 0.2 s, not redis.command's 2 s.
        assert 0.28 < waited < 1.0
        assert table["redis.blocking"].stats()["expired"] == 1
        assert client.stats()["pool"]["discarded"] == 1  # the reply was owed: closed


async def test_block_margin_is_an_option_of_the_client(redis_url: str, set_deadlines) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"http.request": 0.6})
    async with open_redis(redis_url, block_margin_s=0.3) as client:
        assert client.block_margin_s == 0.3
        started = trio.current_time()
        with deadline("http.request"):
            assert await client.blpop(["empty"]) is None
        # Redis was told 0.6 - 0.3 = 0.3 s.
        assert 0.25 < trio.current_time() - started < 0.55


async def test_the_two_settings_are_not_deadline_scopes(redis_url: str) -> None:
    names = {spec.name for spec in SCOPES}
    assert "redis.blocking" in names
    assert not names & {"redis.block_margin", "redis.pubsub_idle"}
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="block_margin_s"):
            async with open_redis(redis_url, block_margin_s=bad):
                pass  # pragma: no cover - refused before the block
        with pytest.raises(ValueError, match="pubsub_idle_s"):
            async with open_redis(redis_url, pubsub_idle_s=bad):
                pass  # pragma: no cover
