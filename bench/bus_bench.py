"""Agent message bus: messages per second, 1 sender and 1 receiver, and 20 of each.

Each pair is a sender queueing ``event`` messages for its own agent and a
receiver taking them, so 20 pairs are 20 inboxes in use at once. Measured on
both backends, through the Python API (``bus.send`` / ``async for message in
bus.inbox(...)``, one message taken at a time, and 32 at a time) and over HTTP
(a real server process: ``POST /api/agents/{agent}/messages`` one message per
request, ``GET ...?wait=5&max=100``), each beside a peer doing the same work
in the same run:

* embedded: a plain ``trio`` memory channel per pair. It keeps nothing and
  orders nothing, while the bus writes every message (and every take) to the
  journal and fsyncs it before answering, so the ratio is the price of that;
* Redis: redis-py's asyncio client, ``LPUSH`` and ``BRPOP`` on one list per
  pair (no priorities, no presence, no hand back).

    .venv/bin/python bench/bus_bench.py [--messages 2000] [--http-messages 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobot.agents import AgentBus
from autobot.redis import open_redis
from autobot.storage import open_embedded_store, open_redis_store
from tests.support.process import run_server
from tests.support.redis_server import RedisProcesses

PAIRS = (1, 20)


# -- ours, through the Python API ---------------------------------------------------------


async def bus_rate(bus: AgentBus, pairs: int, total: int, prefetch: int) -> float:
    per_pair = total // pairs

    async def receive(agent: str) -> None:
        got = 0
        async with bus.inbox(agent, prefetch=prefetch) as inbox:
            while got < per_pair:
                got += len(await inbox.receive(prefetch))

    async def send(agent: str) -> None:
        for n in range(per_pair):
            await bus.send(agent, type="event", payload={"n": n}, sender="bench")

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for pair in range(pairs):
            nursery.start_soon(receive, f"agent{pair}")
            nursery.start_soon(send, f"agent{pair}")
    return per_pair * pairs / (trio.current_time() - started)


async def bus_rates(bus: AgentBus, total: int) -> dict[str, float]:
    rates = {}
    for pairs in PAIRS:
        for prefetch in (1, 32):
            rates[f"{pairs}x{pairs}, take {prefetch}"] = await bus_rate(bus, pairs, total, prefetch)
    return rates


# -- ours, over HTTP ------------------------------------------------------------------------


async def http_rate(url: str, pairs: int, total: int) -> float:
    per_pair = total // pairs
    limits = httpx.Limits(max_connections=2 * pairs + 2)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def receive(agent: str) -> None:
            got = 0
            while got < per_pair:
                response = await client.get(f"/api/agents/{agent}/messages?wait=5&max=100")
                got += len(response.json()["messages"])

        async def send(agent: str) -> None:
            for n in range(per_pair):
                body = {"type": "event", "payload": {"n": n}, "sender": "bench"}
                response = await client.post(f"/api/agents/{agent}/messages", json=body)
                assert response.status_code == 202, response.text

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for pair in range(pairs):
                nursery.start_soon(receive, f"http{pairs}-{pair}")
                nursery.start_soon(send, f"http{pairs}-{pair}")
        return per_pair * pairs / (trio.current_time() - started)


async def server_rates(environ: dict[str, str], total: int) -> dict[str, float]:
    async with run_server(environ) as server:
        return {f"{p}x{p}, HTTP": await http_rate(server.url, p, total) for p in PAIRS}


# -- peers ----------------------------------------------------------------------------------


async def channel_rate(pairs: int, total: int) -> float:
    per_pair = total // pairs

    async def receive(channel: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        for _ in range(per_pair):
            await channel.receive()

    async def send(channel: trio.MemorySendChannel[dict[str, Any]]) -> None:
        for n in range(per_pair):
            await channel.send({"type": "event", "payload": {"n": n}, "sender": "bench"})

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(pairs):
            sender, receiver = trio.open_memory_channel[dict[str, Any]](1000)
            nursery.start_soon(receive, receiver)
            nursery.start_soon(send, sender)
    return per_pair * pairs / (trio.current_time() - started)


def redis_py_rate(url: str, pairs: int, total: int) -> float:
    import json

    import redis.asyncio

    per_pair = total // pairs

    async def main() -> float:
        client = redis.asyncio.Redis.from_url(url, max_connections=2 * pairs + 2)

        async def receive(key: str) -> None:
            for _ in range(per_pair):
                await client.brpop([key], timeout=5)

        async def send(key: str) -> None:
            for n in range(per_pair):
                body = {"type": "event", "payload": {"n": n}, "sender": "bench"}
                await client.lpush(key, json.dumps(body))

        started = time.perf_counter()
        await asyncio.gather(
            *(receive(f"peer{pairs}-{p}") for p in range(pairs)),
            *(send(f"peer{pairs}-{p}") for p in range(pairs)),
        )
        elapsed = time.perf_counter() - started
        await client.aclose()
        return per_pair * pairs / elapsed

    return asyncio.run(main())


# -- running ------------------------------------------------------------------------------


def table(title: str, ours: dict[str, float], peer: Callable[[str], float], name: str) -> None:
    print(f"\n{title}")
    print(f"{'messages/s':<22}{'AutoBot':>10}{name:>12}{'ratio':>8}")
    for row, value in ours.items():
        theirs = peer(row)
        print(f"{row:<22}{value:>10.0f}{theirs:>12.0f}{value / theirs:>7.2f}x")


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="per run, Python API")
    parser.add_argument("--http-messages", type=int, default=1000, help="per run, HTTP")
    args = parser.parse_args()
    print(
        f"{args.messages} messages per Python API run, {args.http_messages} per HTTP run; "
        "ratio = AutoBot / peer"
    )
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)

        async def embedded() -> dict[str, float]:
            async with open_embedded_store(work_dir / "store") as store:
                return await bus_rates(AgentBus(store), args.messages)

        async def channels() -> dict[int, float]:
            return {p: await channel_rate(p, args.messages) for p in PAIRS}

        ours = run(embedded)
        ours |= run(
            lambda: server_rates({"AUTOBOT_DATA_DIR": str(work_dir / "http")}, args.http_messages)
        )
        peer = run(channels)
        table(
            "embedded store vs trio memory channels",
            ours,
            lambda row: peer[int(row.split("x")[0])],
            "channels",
        )

        processes = RedisProcesses(work_dir / "redis")
        server = processes.redis()
        try:

            async def on_redis() -> dict[str, float]:
                async with open_redis(server.url, decode_responses=True) as client:
                    async with open_redis_store(client) as store:
                        return await bus_rates(AgentBus(store), args.messages)

            ours = run(on_redis)
            environ = {"AUTOBOT_REDIS_URL": server.url, "AUTOBOT_DATA_DIR": str(work_dir / "r")}
            ours |= run(lambda: server_rates(environ, args.http_messages))
            peer_rates = {p: redis_py_rate(server.url, p, args.messages) for p in PAIRS}
            table(
                "Redis store vs redis-py asyncio LPUSH/BRPOP",
                ours,
                lambda row: peer_rates[int(row.split("x")[0])],
                "redis-py",
            )
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
