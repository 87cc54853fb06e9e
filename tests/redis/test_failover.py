"""Several URLs: the client follows the first healthy node (probes, killed primary)."""

from __future__ import annotations

import socket

import pytest
import trio

from autobot import DeadlineExceeded, RedisUnavailable
from autobot.redis import Redis, open_redis
from autobot.redis._endpoints import Candidate
from autobot.redis._pool import Connector
from tests.support.redis_server import RedisProcesses, eventually


async def port_of(client: Redis) -> int:
    return int((await client.config_get("port"))["port"])


async def wait_for_port(client: Redis, port: int, budget_s: float) -> float:
    """Keep using the client until it answers from ``port``; return how long it took."""
    started = trio.current_time()
    with trio.fail_after(budget_s):
        while True:
            try:
                if await port_of(client) == port:
                    return trio.current_time() - started
            except (RedisUnavailable, DeadlineExceeded):
                pass
            await trio.sleep(0.02)


async def test_killed_primary_moves_commands_to_the_backup(processes: RedisProcesses) -> None:
    primary, backup = processes.redis(), processes.redis()
    async with open_redis(f"{primary.url},{backup.url}", decode_responses=True) as client:
        assert await port_of(client) == primary.port
        primary.kill()
        await wait_for_port(client, backup.port, 2.0)
        await client.set("written", "after failover")
        assert backup.command("GET", "written") == "after failover"
        assert client.stats()["endpoints"]["preferred"] == backup.address


async def test_silent_primary_is_left_within_two_seconds_and_rejoined(
    processes: RedisProcesses,
) -> None:
    primary, backup = processes.redis(), processes.redis()
    async with open_redis(f"{primary.url},{backup.url}", decode_responses=True) as client:
        assert await port_of(client) == primary.port
        primary.freeze()
        try:
            started = trio.current_time()
            await eventually(
                lambda: client.stats()["endpoints"]["preferred"] == backup.address,
                "the switch to the backup",
                budget_s=2,
            )
            assert trio.current_time() - started < 2.0
            assert await port_of(client) == backup.port
        finally:
            primary.thaw()
        # Back and answering probes: new connections return to the primary.
        await wait_for_port(client, primary.port, 2.0)
        assert client.stats()["endpoints"]["switches"] == 2


async def test_failover_list_with_no_live_node_is_unavailable(processes: RedisProcesses) -> None:
    first, second = processes.redis(), processes.redis()
    first.stop()
    second.stop()
    async with open_redis(f"{first.url},{second.url}") as client:
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await client.ping()


class OneNode:
    """An endpoint source naming one node, with the Sentinel-mode role check on."""

    generation = 0
    check_role = True

    def __init__(self, port: int) -> None:
        self.port = port
        self.failures = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        task_status.started()

    async def candidates(self) -> list[Candidate]:
        return [Candidate(0, f"127.0.0.1:{self.port}", (socket.AF_INET, ("127.0.0.1", self.port)))]

    def report_failure(self, index: int) -> None:
        self.failures += 1

    def describe(self) -> dict[str, object]:
        return {}


async def test_a_node_reporting_itself_a_replica_is_refused(processes: RedisProcesses) -> None:
    primary = processes.redis()
    replica = processes.replica(primary)
    source = OneNode(replica.port)
    connector = Connector(source, [], encoding=None, encoding_errors="strict")
    with pytest.raises(RedisUnavailable, match="replica"):
        await connector.connect()
    assert source.failures == 1
    source.port = primary.port
    connection = await connector.connect()
    connection.close()
