"""Cancellation safety: a reply cut off by a cancellation never reaches another command."""

from __future__ import annotations

import random

import pytest
import trio

from autobot.redis import open_redis
from tests.support.redis_server import RedisProcesses

# Values big enough that each reply arrives in several reads, so random
# cancellations land between the command and its reply and inside the reply.
_VALUE_SIZE = 256 * 1024
_KEYS = 8


def _value(index: int) -> bytes:
    return (f"<value {index}>".encode() * (_VALUE_SIZE // 10 + 1))[:_VALUE_SIZE]


@pytest.mark.parametrize("autopipeline", [True, False], ids=["shared", "pool"])
async def test_random_cancellations_never_cross_replies(redis_url: str, autopipeline: bool) -> None:
    rng = random.Random(1234)
    expected = {f"big:{index}": _value(index) for index in range(_KEYS)}
    async with open_redis(redis_url, autopipeline=autopipeline) as client:
        await client.mset(expected)
        completed = cancelled = 0

        async def get_or_cancel(key: str, checkpoints: int) -> list[bytes]:
            """GET ``key``, cancelled after ``checkpoints`` scheduler passes unless done."""
            done: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def get() -> None:
                    done.append(await client.get(key))
                    nursery.cancel_scope.cancel()

                async def cancel_later() -> None:
                    for _ in range(checkpoints):
                        await trio.lowlevel.checkpoint()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(get)
                nursery.start_soon(cancel_later)
            return done

        async def hammer(seed: int) -> None:
            nonlocal completed, cancelled
            task_rng = random.Random(seed)
            for _ in range(60):
                key = task_rng.choice(list(expected))
                # Half the commands are cancelled within a few scheduler passes
                # (before, during or after their reply), half run to completion.
                checkpoints = task_rng.randrange(0, 6) if task_rng.random() < 0.5 else 1 << 30
                done = await get_or_cancel(key, checkpoints)
                if not done:
                    cancelled += 1
                else:
                    completed += 1
                    assert done[0] == expected[key], f"reply for another command under {key}"

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(hammer, rng.randrange(1 << 30))

        # Both outcomes happened many times, or the test proved nothing.
        assert cancelled > 20 and completed > 20, (cancelled, completed)
        # After the storm, every command still gets its own reply.
        for key in expected:
            assert await client.get(key) == expected[key]
        assert await client.ping() is True
        stats = client.stats()
        if not autopipeline:
            assert stats["pool"]["discarded"] > 0  # interrupted connections were dropped
        assert stats["breaker"]["total_failures"] == 0


async def test_cancel_while_the_server_is_paused_pooled(processes: RedisProcesses) -> None:
    server = processes.redis()
    async with open_redis(server.url, autopipeline=False) as client:
        await client.mset({"k1": "one", "k2": "two"})
        server.freeze()
        try:
            with trio.move_on_after(0.1) as scope:
                await client.get("k1")  # sent; the reply comes after the thaw
            assert scope.cancelled_caught
        finally:
            server.thaw()
        assert await client.get("k2") == b"two"
        assert client.stats()["pool"]["discarded"] == 1


async def test_cancel_while_the_server_is_paused_shared(processes: RedisProcesses) -> None:
    server = processes.redis()
    async with open_redis(server.url) as client:
        await client.mset({"k1": "one", "k2": "two"})
        server.freeze()
        try:
            with trio.move_on_after(0.1) as scope:
                await client.get("k1")
            assert scope.cancelled_caught
        finally:
            server.thaw()
        # The abandoned reply to GET k1 is read and dropped; GET k2 gets "two".
        assert await client.get("k2") == b"two"
        assert await client.get("k1") == b"one"
        assert client.stats()["pool"]["shared"]["opened"] == 1


async def test_many_tasks_cancelled_while_waiting_on_a_paused_server(
    processes: RedisProcesses,
) -> None:
    server = processes.redis()
    async with open_redis(server.url, decode_responses=True) as client:
        await client.mset({f"k{index}": str(index) for index in range(50)})
        results: dict[int, str] = {}

        async def get(index: int) -> None:
            results[index] = await client.get(f"k{index}")

        server.freeze()
        try:
            with trio.move_on_after(0.1):
                async with trio.open_nursery() as nursery:
                    for index in range(0, 50, 2):
                        nursery.start_soon(get, index)  # all cancelled
        finally:
            server.thaw()
        async with trio.open_nursery() as nursery:
            for index in range(1, 50, 2):
                nursery.start_soon(get, index)
        assert results == {index: str(index) for index in range(1, 50, 2)}
