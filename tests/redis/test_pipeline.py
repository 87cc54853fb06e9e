"""Pipelines and MULTI/EXEC transactions, with WATCH conflicts."""

from __future__ import annotations

import pytest
import trio
from redis.exceptions import ResponseError, WatchError

from autobot.redis import Pipeline, Redis, open_redis


async def test_pipeline_returns_converted_results_in_order(client: Redis) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.set("a", 1).incr("a").hset("h", mapping={"x": "y"}).hgetall("h").get("missing")
    assert len(pipe) == 5
    assert await pipe.execute() == [True, 2, 1, {"x": "y"}, None]
    assert len(pipe) == 0


async def test_pipeline_errors_in_place_or_raised(client: Redis) -> None:
    await client.set("text", "x")
    pipe = client.pipeline(transaction=False)
    pipe.get("text").lpush("text", "y").get("text")
    results = await pipe.execute(raise_on_error=False)
    assert results[0] == "x" and isinstance(results[1], ResponseError) and results[2] == "x"
    pipe.get("text").lpush("text", "y")
    with pytest.raises(ResponseError, match="Command # 2"):
        await pipe.execute()


async def test_transaction_is_atomic_and_converted(client: Redis) -> None:
    async with client.pipeline() as pipe:
        pipe.set("n", 1).incrby("n", 10).zadd("z", {"m": 2}).zrange("z", 0, -1, withscores=True)
        assert await pipe.execute() == [True, 11, 1, [("m", 2.0)]]


async def test_transaction_with_a_queueing_error_aborts(client: Redis) -> None:
    async with client.pipeline() as pipe:
        pipe.set("n", 1).execute_command("SET")  # wrong number of arguments
        with pytest.raises(ResponseError):
            await pipe.execute()
    assert await client.get("n") is None


async def test_watch_conflict_raises_watch_error(client: Redis) -> None:
    await client.set("balance", 100)
    async with client.pipeline() as pipe:
        await pipe.watch("balance")
        balance = int(await pipe.get("balance"))
        await client.set("balance", 50)  # another writer
        pipe.multi()
        pipe.set("balance", balance - 10)
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await client.get("balance") == "50"


async def test_watch_without_conflict_commits(client: Redis) -> None:
    await client.set("balance", 100)
    async with client.pipeline() as pipe:
        await pipe.watch("balance")
        balance = int(await pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", balance - 10)
        assert await pipe.execute() == [True]
    assert await client.get("balance") == "90"
    assert client.pool.stats()["in_use"] == 0


async def test_transaction_helper_retries_until_no_conflict(client: Redis) -> None:
    await client.set("counter", 0)
    attempts = 0

    async def increment(pipe: Pipeline) -> None:
        nonlocal attempts
        attempts += 1
        value = int(await pipe.get("counter"))
        if attempts == 1:
            await client.set("counter", 100)  # conflicts with the first attempt only
        pipe.multi()
        pipe.set("counter", value + 1)

    assert await client.transaction(increment, "counter") == [True]
    assert attempts == 2
    assert await client.get("counter") == "101"


async def test_concurrent_transactions_do_not_interleave(client: Redis) -> None:
    async def add(index: int) -> None:
        async with client.pipeline() as pipe:
            pipe.rpush("log", f"{index}-a").rpush("log", f"{index}-b")
            await pipe.execute()

    async with trio.open_nursery() as nursery:
        for index in range(30):
            nursery.start_soon(add, index)
    log = await client.lrange("log", 0, -1)
    assert len(log) == 60
    for position in range(0, 60, 2):
        first, second = log[position], log[position + 1]
        assert first.endswith("-a") and second == first[:-1] + "b"


async def test_pipelines_without_autopipelining(redis_url: str) -> None:
    async with open_redis(redis_url, autopipeline=False) as client:
        async with client.pipeline() as pipe:
            pipe.set("k", "v").get("k")
            assert await pipe.execute() == [True, b"v"]


async def test_pipeline_with_a_binary_command_decodes_the_others(client: Redis) -> None:
    await client.set("k", "v")
    pipe = client.pipeline(transaction=False)
    pipe.get("k").dump("k").hgetall("none")
    text, dumped, empty = await pipe.execute()
    assert text == "v" and isinstance(dumped, bytes) and empty == {}
