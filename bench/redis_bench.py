"""Benchmark: AutoBot's Trio Redis client against redis-py's asyncio client.

Starts its own ``redis-server`` on a free port (``--save "" --appendonly no``),
then runs each workload for both clients, alternating rounds so that drift in
the machine's speed hits both alike, and reports the median of the rounds:

* sequential GET (one task, one command at a time);
* 20 tasks × 500 GET at once;
* one pipeline of 10,000 SET commands;
* pub/sub: messages per second from one publisher to one subscriber;

plus ``redis-benchmark -c 1`` and ``-c 20`` (GET) as the ceiling. Sequential GET
is measured a second way too, as many short back-to-back bursts of each
client, because a one-task loop is the workload most sensitive to the
machine's moment-to-moment noise. The AutoBot
client runs twice where it matters: with automatic pipelining (the default)
and with ``autopipeline=False`` (a plain pool of connections), which is how
the default was chosen.

By default the server is pinned to the last CPU and this process to the first
(``--no-pin`` to disable): on a small machine that removes most of the noise
of the two processes landing on one core now and on two the next.

    .venv/bin/python bench/redis_bench.py            # about three minutes
    .venv/bin/python bench/redis_bench.py --rounds 3 --quick

asyncio is used here for the redis-py peer only; AutoBot itself has none.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis.asyncio as redis_asyncio
import trio

from autobot.redis import open_redis

CONCURRENT_TASKS = 20
PER_TASK = 500
PAYLOAD = b"x" * 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, pin_cpu: int | None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-bench-")
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
        ]  # fmt: skip
        if pin_cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(pin_cpu), *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the workloads, once per client -------------------------------------------


async def trio_workloads(port: int, n_seq: int, n_pipe: int, n_pub: int, autopipeline: bool):
    results: dict[str, float] = {}
    url = f"redis://127.0.0.1:{port}/0"
    async with open_redis(url, autopipeline=autopipeline) as client:
        await client.set("bench:key", PAYLOAD)
        await client.get("bench:key")

        started = time.perf_counter()
        for _ in range(n_seq):
            await client.get("bench:key")
        results["seq"] = n_seq / (time.perf_counter() - started)

        async def worker() -> None:
            for _ in range(PER_TASK):
                await client.get("bench:key")

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENT_TASKS):
                nursery.start_soon(worker)
        results["concurrent"] = CONCURRENT_TASKS * PER_TASK / (time.perf_counter() - started)

        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for index in range(n_pipe):
            pipe.set(f"bench:pipe:{index}", index)
        await pipe.execute()
        results["pipeline"] = n_pipe / (time.perf_counter() - started)

        async with client.pubsub() as pubsub:
            await pubsub.subscribe("bench:channel")
            received = 0
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    for _ in range(n_pub):
                        await client.publish("bench:channel", PAYLOAD)

                nursery.start_soon(publish)
                async for _ in pubsub:
                    received += 1
                    if received == n_pub:
                        break
            results["pubsub"] = n_pub / (time.perf_counter() - started)
    return results


async def asyncio_workloads(port: int, n_seq: int, n_pipe: int, n_pub: int):
    results: dict[str, float] = {}
    client = redis_asyncio.Redis(host="127.0.0.1", port=port)
    try:
        await client.set("bench:key", PAYLOAD)
        await client.get("bench:key")

        started = time.perf_counter()
        for _ in range(n_seq):
            await client.get("bench:key")
        results["seq"] = n_seq / (time.perf_counter() - started)

        async def worker() -> None:
            for _ in range(PER_TASK):
                await client.get("bench:key")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENT_TASKS)))
        results["concurrent"] = CONCURRENT_TASKS * PER_TASK / (time.perf_counter() - started)

        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for index in range(n_pipe):
            pipe.set(f"bench:pipe:{index}", index)
        await pipe.execute()
        results["pipeline"] = n_pipe / (time.perf_counter() - started)

        pubsub = client.pubsub()
        await pubsub.subscribe("bench:channel")
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        received = 0

        async def publish() -> None:
            for _ in range(n_pub):
                await client.publish("bench:channel", PAYLOAD)

        started = time.perf_counter()
        publisher = asyncio.ensure_future(publish())
        async for message in pubsub.listen():
            if message["type"] == "message":
                received += 1
                if received == n_pub:
                    break
        await publisher
        results["pubsub"] = n_pub / (time.perf_counter() - started)
        await pubsub.aclose()
    finally:
        await client.aclose()
    return results


async def trio_sequential(port: int, count: int) -> float:
    async with open_redis(f"redis://127.0.0.1:{port}/0") as client:
        await client.get("bench:key")
        started = time.perf_counter()
        for _ in range(count):
            await client.get("bench:key")
        return count / (time.perf_counter() - started)


async def asyncio_sequential(port: int, count: int) -> float:
    client = redis_asyncio.Redis(host="127.0.0.1", port=port)
    try:
        await client.get("bench:key")
        started = time.perf_counter()
        for _ in range(count):
            await client.get("bench:key")
        return count / (time.perf_counter() - started)
    finally:
        await client.aclose()


def paired_sequential(port: int, pairs: int, count: int) -> list[float]:
    """Ratios of short sequential-GET bursts run back to back, order alternating.

    A burst takes a fraction of a second, so both clients of a pair see the
    same machine; the median of many pairs is what the sequential target is
    judged on.
    """
    ratios = []
    for pair in range(pairs):
        if pair % 2:
            theirs = asyncio.run(asyncio_sequential(port, count))
            ours = trio.run(trio_sequential, port, count)
        else:
            ours = trio.run(trio_sequential, port, count)
            theirs = asyncio.run(asyncio_sequential(port, count))
        ratios.append(ours / theirs)
    return sorted(ratios)


def redis_benchmark(port: int, clients: int, requests: int) -> float | None:
    if not shutil.which("redis-benchmark"):
        return None
    output = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
         "-n", str(requests), "-t", "get", "--csv"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    for line in output.splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if cells and cells[0] == "GET":
            return float(cells[1])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    options = parser.parse_args()
    n_seq, n_pipe, n_pub = (2000, 2000, 2000) if options.quick else (20000, 10000, 20000)

    cpus = sorted(os.sched_getaffinity(0))
    pin = not options.no_pin and len(cpus) >= 2
    server = Server(cpus[-1] if pin else None)
    if pin:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        runs: dict[str, list[dict[str, float]]] = {
            "autobot": [],
            "autobot-pool": [],
            "redis-py": [],
        }
        for _ in range(options.rounds):
            runs["autobot"].append(
                trio.run(trio_workloads, server.port, n_seq, n_pipe, n_pub, True)
            )
            runs["redis-py"].append(
                asyncio.run(asyncio_workloads(server.port, n_seq, n_pipe, n_pub))
            )
            runs["autobot-pool"].append(
                trio.run(trio_workloads, server.port, n_seq, n_pipe, n_pub, False)
            )
        pairs = paired_sequential(server.port, 10 if options.quick else 40, 3000)
        ceiling_1 = redis_benchmark(server.port, 1, 50000 if not options.quick else 5000)
        ceiling_20 = redis_benchmark(server.port, 20, 200000 if not options.quick else 20000)
    finally:
        server.stop()

    def median(client: str, workload: str) -> float:
        return statistics.median(run[workload] for run in runs[client])

    rows = [
        ("sequential GET", "seq"),
        (f"{CONCURRENT_TASKS} tasks × {PER_TASK} GET", "concurrent"),
        (f"pipeline of {n_pipe:,} SET", "pipeline"),
        ("pub/sub messages", "pubsub"),
    ]
    print(f"\nmedian of {options.rounds} rounds, ops/s; Python {sys.version.split()[0]}, "
          f"{len(cpus)} CPUs{', pinned' if pin else ''}\n")  # fmt: skip
    print("| workload | AutoBot (autopipeline) | AutoBot (plain pool) | redis-py asyncio "
          "| ratio (autopipeline / redis-py) | ratio range |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for title, key in rows:
        ours, pool, theirs = (median(c, key) for c in ("autobot", "autobot-pool", "redis-py"))
        # Each round's ratio compares runs made seconds apart, so its median
        # is steadier than the ratio of the medians on a noisy machine.
        ratios = sorted(
            mine[key] / peer[key]
            for mine, peer in zip(runs["autobot"], runs["redis-py"], strict=True)
        )
        print(
            f"| {title} | {ours:,.0f} | {pool:,.0f} | {theirs:,.0f} "
            f"| {statistics.median(ratios):.2f}× | {ratios[0]:.2f}–{ratios[-1]:.2f} |"
        )
    quartiles = statistics.quantiles(pairs, n=4)
    print(
        f"\nsequential GET, {len(pairs)} back-to-back pairs of 3,000: ratio median "
        f"{statistics.median(pairs):.2f}×, quartiles {quartiles[0]:.2f}–{quartiles[2]:.2f}"
    )
    if ceiling_1 is not None and ceiling_20 is not None:
        print(f"\nredis-benchmark GET ceiling: -c 1: {ceiling_1:,.0f} req/s; "
              f"-c 20: {ceiling_20:,.0f} req/s")  # fmt: skip


if __name__ == "__main__":
    main()
