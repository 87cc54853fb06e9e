"""Sentinel mode: killing the master moves the client to the promoted replica by itself."""

from __future__ import annotations

import trio

from autobot import DeadlineExceeded, RedisUnavailable
from autobot.redis import open_redis
from tests.support.redis_server import RedisProcesses, eventually, sentinel_master


async def test_client_follows_a_sentinel_failover(processes: RedisProcesses) -> None:
    master = processes.redis()
    replica = processes.replica(master)
    sentinels = processes.sentinels(master, count=1, down_after_ms=200, failover_timeout_ms=1000)
    url = f"redis+sentinel://127.0.0.1:{sentinels[0].port}/autobot"
    async with open_redis(url, decode_responses=True) as client:
        await client.set("before", "failover")
        await eventually(lambda: replica.command("GET", "before") == "failover", "replication")
        assert (await client.config_get("port"))["port"] == str(master.port)
        master.kill()
        # The test only keeps using the client; discovery, refusal of the dead
        # master and the switch are the client's doing.
        with trio.fail_after(20):
            while True:
                try:
                    await client.set("after", "failover")
                    break
                except (RedisUnavailable, DeadlineExceeded):
                    await trio.sleep(0.05)
        assert (await client.config_get("port"))["port"] == str(replica.port)
        assert await client.get("before") == "failover"  # replicated before the kill
        assert sentinel_master(sentinels[0]) == ("127.0.0.1", replica.port)
        assert replica.command("GET", "after") == "failover"
        described = client.stats()["endpoints"]
        assert described["mode"] == "sentinel" and described["switches"] == 1


async def test_unknown_service_is_unavailable(processes: RedisProcesses) -> None:
    master = processes.redis()
    processes.replica(master)
    sentinels = processes.sentinels(master)
    url = f"redis+sentinel://127.0.0.1:{sentinels[0].port}/no-such-service"
    async with open_redis(url) as client:
        try:
            await client.ping()
        except RedisUnavailable as error:
            assert "no-such-service" in str(error)
        else:  # pragma: no cover - the assertion below reports it
            raise AssertionError("a client for an unknown service answered")
