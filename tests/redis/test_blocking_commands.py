"""Blocking commands: server-side timeouts from the deadline, and cancellation."""

from __future__ import annotations

import pytest
import trio

from autobot import DeadlineExceeded, deadline
from autobot.redis import Redis
from tests.support.redis_server import RedisProcess, eventually


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
        # The server was told to give up 0.1 s (redis.block_margin) before the
        # deadline, so the empty reply arrives in time and the caller sees None.
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
