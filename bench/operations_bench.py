"""Operations: checkpoint save cost on both backends, and adoption after a SIGKILL.

* Checkpoint save: what the runner does for one checkpoint of a running
  operation (the checkpoint state and the record's checkpoint summary, in one
  durable write), through the storage layer, with a state of about 8 KB (50 per-file results
  and counters). Median and p99 over many saves, beside a peer doing the same
  durable writes: SQLite (WAL, ``synchronous=FULL``, two upserts in one
  transaction) for the embedded store, redis-py's asyncio client (two SETs)
  for Redis. Targets: under 5 ms embedded, under 2 ms Redis.
* Adoption: two real server processes on one ``redis-server`` with the
  default lease (10 s) and heartbeat (3 s); the one running an operation is
  killed with SIGKILL, and the time until the other has started it again
  (``attempts`` 2, ``running``) is measured. Bound: lease + heartbeat (13 s);
  the issue's target is 15 s.

    .venv/bin/python bench/operations_bench.py [--saves 500] [--adoptions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autobot.redis import open_redis  # noqa: E402
from autobot.storage import Store, open_embedded_store, open_redis_store  # noqa: E402
from tests.support.polling import eventually  # noqa: E402
from tests.support.process import run_server  # noqa: E402
from tests.support.redis_server import RedisProcesses  # noqa: E402


def checkpoint_state(step: int) -> dict[str, Any]:
    files = [
        {
            "path": f"src/pkg{n % 7}/module_{n}.py",
            "language": "python",
            "lines": 120 + n,
            "symbols": [f"func_{n}_{k}" for k in range(5)],
        }
        for n in range(50)
    ]
    return {"next": step, "summary": {"files": step, "lines": step * 120}, "files": files}


def record_of(operation_id: str) -> dict[str, Any]:
    return {
        "id": operation_id,
        "type": "codebase_indexing",
        "status": "running",
        "priority": "normal",
        "created_at": "2026-12-02T00:00:00.000Z",
        "attempts": 1,
        "progress": {"processed_items": 0, "total_items": 20000},
        "checkpoint": None,
        "params": {"path": "src"},
        "result": None,
        "error": None,
    }


def quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def save_checkpoints(store: Store, saves: int) -> list[float]:
    record = record_of("op-bench")
    await store.put_operation(record)
    samples = []
    for step in range(saves):
        state = checkpoint_state(step)
        started = time.perf_counter()
        record["checkpoint"] = {"processed_items": step, "created_at": "now"}
        checkpoint = {"processed_items": step, "state": state}
        await store.put_checkpoint(record["id"], checkpoint, operation=record)
        samples.append(time.perf_counter() - started)
    return samples


def sqlite_peer(directory: Path, saves: int) -> list[float]:
    db = sqlite3.connect(directory / "peer.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")
    record = record_of("op-bench")
    samples = []
    for step in range(saves):
        started = time.perf_counter()
        payload = json.dumps({"processed_items": step, "state": checkpoint_state(step)})
        record["checkpoint"] = {"processed_items": step, "created_at": "now"}
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", ("checkpoint:op", payload))
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", ("operation:op", json.dumps(record)))
        db.execute("COMMIT")
        samples.append(time.perf_counter() - started)
    return samples


def redis_py_peer(url: str, saves: int) -> list[float]:
    import redis.asyncio as aioredis

    async def run() -> list[float]:
        client = aioredis.from_url(url, decode_responses=True)
        record = record_of("op-bench")
        samples = []
        for step in range(saves):
            started = time.perf_counter()
            payload = json.dumps({"processed_items": step, "state": checkpoint_state(step)})
            await client.set("peer:checkpoint:op", payload)
            record["checkpoint"] = {"processed_items": step, "created_at": "now"}
            await client.set("peer:operation:op", json.dumps(record))
            samples.append(time.perf_counter() - started)
        await client.aclose()
        return samples

    return asyncio.run(run())


def report(label: str, ours: list[float], peer: list[float], peer_name: str) -> None:
    median, p99 = quantiles(ours)
    peer_median, peer_p99 = quantiles(peer)
    print(
        f"checkpoint save, {label:8}: median {median:.2f} ms  p99 {p99:.2f} ms   |  "
        f"{peer_name}: median {peer_median:.2f} ms  p99 {peer_p99:.2f} ms   "
        f"(median ratio peer/ours {peer_median / median:.2f})"
    )


def plant_slow_suite(data_dir: Path) -> None:
    suite = data_dir / "files" / "suite"
    suite.mkdir(parents=True, exist_ok=True)
    for index in range(200):
        (suite / f"test_slow{index}.py").write_text(
            "import time\n\ndef test_slow():\n    time.sleep(0.5)\n"
        )


async def until_status(
    client: httpx.AsyncClient, operation_id: str, status: str, *, attempts: int
) -> None:
    async def check() -> bool:
        record = (await client.get(f"/api/operations/{operation_id}")).json()
        return record["status"] == status and record["attempts"] >= attempts

    with trio.fail_after(60):
        await eventually(check, interval_s=0.05)


async def measure_adoption(work: Path, redis_url: str, rounds: int) -> list[float]:
    plant_slow_suite(work)
    environ = {"AUTOBOT_REDIS_URL": redis_url, "AUTOBOT_DATA_DIR": str(work)}
    seconds = []
    timeout = httpx.Timeout(30.0)
    async with (
        run_server(environ) as watcher,
        httpx.AsyncClient(base_url=watcher.url, timeout=timeout) as other,
    ):
        for _ in range(rounds):
            async with (
                run_server(environ) as owner,
                httpx.AsyncClient(base_url=owner.url, timeout=timeout) as on,
            ):
                response = await on.post(
                    "/api/operations/testing/comprehensive", json={"path": "suite"}
                )
                operation_id = response.json()["operation_id"]
                await until_status(on, operation_id, "running", attempts=1)
                owner.process.send_signal(signal.SIGKILL)
                killed_at = trio.current_time()
                await owner.process.wait()
            await until_status(other, operation_id, "running", attempts=2)
            seconds.append(trio.current_time() - killed_at)
            await other.post(f"/api/operations/{operation_id}/cancel")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=500)
    parser.add_argument("--adoptions", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        processes = RedisProcesses(work / "redis")
        try:
            redis = processes.redis()

            async def embedded() -> list[float]:
                async with open_embedded_store(work / "store") as store:
                    return await save_checkpoints(store, args.saves)

            async def on_redis() -> list[float]:
                async with open_redis(redis.url, decode_responses=True) as client:
                    async with open_redis_store(client) as store:
                        return await save_checkpoints(store, args.saves)

            print(f"{os.cpu_count()} cores, {args.saves} saves of an ~8 KB state")
            report("embedded", trio.run(embedded), sqlite_peer(work, args.saves), "SQLite FULL")
            report("redis", trio.run(on_redis), redis_py_peer(redis.url, args.saves), "redis-py")
            if args.adoptions:
                redis.command("FLUSHALL")  # the checkpoint records above are not to adopt
                adoption = trio.run(measure_adoption, work / "adopt", redis.url, args.adoptions)
                print(
                    "SIGKILL to adoption (default lease 10 s, heartbeat 3 s): "
                    + ", ".join(f"{s:.1f} s" for s in adoption)
                    + f"; max {max(adoption):.1f} s"
                )
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
