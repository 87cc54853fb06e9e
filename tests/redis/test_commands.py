"""Commands and reply types, against a real server: redis-py's shapes, our transport."""

from __future__ import annotations

import pytest
import trio
from redis.exceptions import DataError, RedisError, ResponseError

from autobot import DeadlineTable, RedisUnavailable
from autobot.redis import Redis, open_redis


async def test_strings(client: Redis) -> None:
    assert await client.set("greeting", "hello") is True
    assert await client.get("greeting") == "hello"
    assert await client.get("missing") is None
    assert await client.set("greeting", "again", nx=True) is None
    assert await client.incrby("counter", 5) == 5
    assert await client.incrbyfloat("counter", 0.5) == 5.5
    assert await client.mget("greeting", "missing") == ["hello", None]
    assert await client.append("greeting", "!") == 6
    assert await client.strlen("greeting") == 6
    assert await client.set("ttl", "x", ex=100) is True
    assert 0 < await client.ttl("ttl") <= 100
    assert await client.exists("greeting", "ttl", "missing") == 2
    assert await client.delete("greeting", "ttl") == 2


async def test_raw_client_returns_bytes(raw_client: Redis) -> None:
    await raw_client.set("k", "välue")
    assert await raw_client.get("k") == "välue".encode()
    assert await raw_client.hgetall("none") == {}


async def test_hashes(client: Redis) -> None:
    assert await client.hset("chat:1", mapping={"title": "Hi", "turns": 3}) == 2
    assert await client.hget("chat:1", "title") == "Hi"
    assert await client.hgetall("chat:1") == {"title": "Hi", "turns": "3"}
    assert await client.hincrby("chat:1", "turns", 2) == 5
    assert await client.hexists("chat:1", "title") is True
    assert sorted(await client.hkeys("chat:1")) == ["title", "turns"]
    assert await client.hmget("chat:1", ["title", "nope"]) == ["Hi", None]
    assert await client.hdel("chat:1", "title") == 1
    assert await client.hlen("chat:1") == 1


async def test_lists(client: Redis) -> None:
    assert await client.rpush("turns", "a", "b", "c") == 3
    assert await client.lpush("turns", "z") == 4
    assert await client.lrange("turns", 0, -1) == ["z", "a", "b", "c"]
    assert await client.lpop("turns") == "z"
    assert await client.rpop("turns", 2) == ["c", "b"]
    assert await client.llen("turns") == 1
    assert await client.ltrim("turns", 0, 0) is True


async def test_sets(client: Redis) -> None:
    assert await client.sadd("tags", "a", "b", "c") == 3
    assert await client.smembers("tags") == {"a", "b", "c"}
    assert await client.sismember("tags", "a") == 1
    assert await client.sadd("other", "b", "x") == 2
    assert await client.sinter("tags", "other") == {"b"}
    assert await client.srem("tags", "a") == 1
    assert await client.scard("tags") == 2


async def test_sorted_sets(client: Redis) -> None:
    assert await client.zadd("scores", {"alice": 3, "bob": 1.5}) == 2
    assert await client.zrange("scores", 0, -1, withscores=True) == [("bob", 1.5), ("alice", 3.0)]
    assert await client.zscore("scores", "alice") == 3.0
    assert await client.zincrby("scores", 2, "bob") == 3.5
    assert await client.zrevrange("scores", 0, 0) == ["bob"]
    assert await client.zrank("scores", "alice") == 0
    assert await client.zpopmin("scores") == [("alice", 3.0)]
    assert await client.zcard("scores") == 1


async def test_streams(client: Redis) -> None:
    first = await client.xadd("events", {"kind": "start", "n": 1})
    second = await client.xadd("events", {"kind": "stop"})
    assert first < second
    assert await client.xlen("events") == 2
    entries = await client.xrange("events")
    assert entries == [(first, {"kind": "start", "n": "1"}), (second, {"kind": "stop"})]
    read = await client.xread({"events": "0-0"}, count=1)
    assert read == [["events", [(first, {"kind": "start", "n": "1"})]]]
    assert await client.xgroup_create("events", "workers", id="0") is True
    claimed = await client.xreadgroup("workers", "w1", {"events": ">"}, count=5)
    assert [entry_id for entry_id, _ in claimed[0][1]] == [first, second]
    assert await client.xack("events", "workers", first, second) == 2
    assert await client.xtrim("events", maxlen=1, approximate=False) == 1


async def test_scan_iter_and_keys(client: Redis) -> None:
    for index in range(30):
        await client.set(f"scan:{index}", index)
    found = {key async for key in client.scan_iter(match="scan:*", count=7)}
    assert len(found) == 30


async def test_scripts(client: Redis) -> None:
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["n"], args=[4]) == 4
    assert await client.eval("return ARGV[1]", 0, "x") == "x"


async def test_binary_replies_stay_bytes_on_a_decoding_client(client: Redis) -> None:
    await client.set("blob", "value")
    dumped = await client.dump("blob")
    assert isinstance(dumped, bytes)
    assert await client.restore("copy", 0, dumped) == "OK"
    assert await client.get("copy") == "value"


async def test_error_replies_raise_and_leave_the_client_healthy(client: Redis) -> None:
    await client.set("text", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await client.lpush("text", "y")
    with pytest.raises(ResponseError):
        await client.execute_command("NOSUCHCOMMAND")
    assert client.breaker.snapshot()["total_failures"] == 0
    assert await client.get("text") == "x"


async def test_values_redis_py_refuses_are_refused(client: Redis) -> None:
    with pytest.raises(DataError):
        await client.set("k", True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "advice"),
    [("MULTI", "pipeline"), ("SUBSCRIBE", "pubsub"), ("SELECT", "URL"), ("WATCH", "pipeline")],
)
async def test_connection_state_commands_are_refused(
    client: Redis, command: str, advice: str
) -> None:
    with pytest.raises(RedisError, match=advice):
        await client.execute_command(command, "x")


async def test_database_and_password_from_the_url(processes) -> None:  # type: ignore[no-untyped-def]
    server = processes.redis(password="s3cret")
    async with open_redis(f"redis://:s3cret@127.0.0.1:{server.port}/2") as client:
        await client.set("where", "db2")
    assert server.command("GET", "where") is None
    assert server.command("SELECT", "2") == "OK"
    async with open_redis(f"redis://:wrong@127.0.0.1:{server.port}/0") as client:
        with pytest.raises(RedisUnavailable, match=r"WRONGPASS|invalid"):
            await client.ping()


async def test_commands_from_many_tasks_share_writes(client: Redis) -> None:
    for index in range(100):
        await client.set(f"k{index}", index)
    results: dict[int, str] = {}

    async def read(index: int) -> None:
        results[index] = await client.get(f"k{index}")

    writes_before = client.stats()["pool"]["shared"]["writes"]
    async with trio.open_nursery() as nursery:
        for index in range(100):
            nursery.start_soon(read, index)
    assert results == {index: str(index) for index in range(100)}
    writes = client.stats()["pool"]["shared"]["writes"] - writes_before
    assert writes < 20, f"100 concurrent GETs took {writes} writes"


async def test_autopipeline_off_uses_the_pool(redis_url: str) -> None:
    async with open_redis(redis_url, autopipeline=False, max_connections=3) as client:

        async def work(index: int) -> None:
            await client.set(f"p{index}", index)
            assert await client.get(f"p{index}") == str(index).encode()

        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(work, index)
        stats = client.stats()["pool"]
        assert stats["connects"] <= 3 and stats["in_use"] == 0 and stats["idle"] >= 1


async def test_pool_wait_is_bounded_by_redis_pool(
    redis_url: str, set_deadlines, fresh_deadlines: DeadlineTable
) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"redis.pool": 0.1})
    async with open_redis(redis_url, max_connections=1) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.blpop, ["never"], 0.5)
            await trio.sleep(0.05)
            with pytest.raises(Exception, match=r"redis\.pool"):
                await client.blpop(["never"], 0.1)
    # An exhausted pool is the app being busy, not Redis failing.
    assert client.breaker.snapshot()["total_failures"] == 0


async def test_stats_shape(client: Redis) -> None:
    await client.ping()
    stats = client.stats()
    assert stats["breaker"]["state"] == "closed"
    assert stats["endpoints"]["mode"] == "single"
    assert stats["pool"]["shared"]["commands"] >= 1
