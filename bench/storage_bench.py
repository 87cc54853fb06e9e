"""Storage: durable appends per second and list-sessions latency, both backends.

Each backend runs beside a peer doing the same work with the same guarantee:

* embedded store vs SQLite (WAL journal, ``synchronous=FULL``: every commit is
  on disk before it returns, as every acknowledged append is here);
* Redis store vs redis-py's asyncio client running the same Lua script (the
  peer is the client, not the data layout).

Appends are measured from one task (each waits for its own durable write) and
from 100 concurrent tasks. List latency is ``list_chats(limit=50)`` (newest
first, with message counts) over 10,000 chats of 20 messages each.

    .venv/bin/python bench/storage_bench.py [--chats 10000] [--appends 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobot.redis import open_redis
from autobot.storage import Store, open_embedded_store, open_redis_store
from autobot.storage._redis_scripts import SCRIPTS
from tests.support.redis_server import RedisProcesses

CONCURRENCY = 100
LIST_LIMIT = 50
LIST_SAMPLES = 200


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def chat_records(chats: int, messages: int) -> list[dict]:
    stamp = now_iso()
    records = []
    for c in range(chats):
        chat_id = f"chat{c:06d}"
        records.append(
            {
                "kind": "chat",
                "id": chat_id,
                "title": f"chat {c}",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        for m in range(messages):
            records.append(
                {
                    "kind": "message",
                    "chat_id": chat_id,
                    "id": f"{chat_id}-{m}",
                    "role": "user" if m % 2 == 0 else "assistant",
                    "content": f"message {m} of chat {c} " + "lorem ipsum " * 8,
                    "created_at": stamp,
                    "status": "complete",
                }
            )
    return records


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- our stores ----------------------------------------------------------------------


async def our_appends(store: Store, count: int, concurrency: int) -> float:
    chat = await store.create_chat("bench")
    per_task = count // concurrency
    started = trio.current_time()

    async def worker() -> None:
        for n in range(per_task):
            await store.append_message(chat.id, "user", f"append {n} " + "x" * 100)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return per_task * concurrency / (trio.current_time() - started)


async def our_list_latency(store: Store) -> list[float]:
    samples = []
    for _ in range(LIST_SAMPLES):
        started = trio.current_time()
        chats = await store.list_chats(limit=LIST_LIMIT)
        samples.append(trio.current_time() - started)
        assert len(chats) == LIST_LIMIT and chats[0].message_count >= 0
    return samples


async def bench_ours(store: Store, records: list[dict], appends: int) -> dict[str, float]:
    for start in range(0, len(records), 5000):
        await store.import_records(records[start : start + 5000])
    sequential = await our_appends(store, appends // 4, 1)
    concurrent = await our_appends(store, appends, CONCURRENCY)
    latency = await our_list_latency(store)
    return {
        "appends/s, 1 task": sequential,
        f"appends/s, {CONCURRENCY} tasks": concurrent,
        "list p50 ms": statistics.median(latency) * 1000,
        "list p99 ms": percentile(latency, 0.99) * 1000,
    }


# -- SQLite peer -------------------------------------------------------------------------


def sqlite_peer(path: Path, records: list[dict], appends: int) -> dict[str, float]:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(
        """
        CREATE TABLE chats (id TEXT PRIMARY KEY, title TEXT, created_at TEXT, updated_at TEXT,
                            clock INTEGER);
        CREATE INDEX chats_clock ON chats (clock);
        CREATE TABLE messages (id TEXT PRIMARY KEY, chat_id TEXT, role TEXT, content TEXT,
                               created_at TEXT, status TEXT);
        CREATE INDEX messages_chat ON messages (chat_id);
        """
    )
    clock = 0
    db.execute("BEGIN")
    for record in records:
        clock += 1
        if record["kind"] == "chat":
            db.execute(
                "INSERT INTO chats VALUES (?,?,?,?,?)",
                (record["id"], record["title"], record["created_at"], record["updated_at"], clock),
            )
        else:
            db.execute(
                "INSERT INTO messages VALUES (?,?,?,?,?,?)",
                (
                    record["id"],
                    record["chat_id"],
                    record["role"],
                    record["content"],
                    record["created_at"],
                    record["status"],
                ),
            )
            db.execute("UPDATE chats SET clock=? WHERE id=?", (clock, record["chat_id"]))
    db.execute("COMMIT")
    db.execute("INSERT INTO chats VALUES ('bench','bench','','',0)")
    lock = threading.Lock()

    def append(n: int) -> None:
        nonlocal clock
        with lock:  # SQLite has one writer; each append is its own durable transaction
            clock += 1
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO messages VALUES (?,?,?,?,?,?)",
                (f"b{clock}", "bench", "user", f"append {n} " + "x" * 100, now_iso(), "complete"),
            )
            db.execute(
                "UPDATE chats SET clock=?, updated_at=? WHERE id='bench'", (clock, now_iso())
            )
            db.execute("COMMIT")

    def run(count: int, threads: int) -> float:
        per_thread = count // threads
        started = time.perf_counter()
        workers = [
            threading.Thread(target=lambda: [append(n) for n in range(per_thread)])
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return per_thread * threads / (time.perf_counter() - started)

    sequential = run(appends // 4, 1)
    concurrent = run(appends, 8)
    samples = []
    query = (
        "SELECT c.id, c.title, c.created_at, c.updated_at,"
        " (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id)"
        " FROM chats c ORDER BY c.clock DESC LIMIT ?"
    )
    for _ in range(LIST_SAMPLES):
        started = time.perf_counter()
        rows = db.execute(query, (LIST_LIMIT,)).fetchall()
        samples.append(time.perf_counter() - started)
        assert len(rows) == LIST_LIMIT
    db.close()
    return {
        "appends/s, 1 task": sequential,
        f"appends/s, {CONCURRENCY} tasks": concurrent,
        "list p50 ms": statistics.median(samples) * 1000,
        "list p99 ms": percentile(samples, 0.99) * 1000,
    }


# -- redis-py asyncio peer ---------------------------------------------------------------


def redis_py_peer(url: str, appends: int) -> dict[str, float]:
    import redis.asyncio

    script = SCRIPTS["append_message"]
    keys_for = [
        "autobot:chats",
        "autobot:clock",
        "autobot:chat:bench",
        "autobot:chat:bench:messages",
    ]

    async def main() -> dict[str, float]:
        client = redis.asyncio.Redis.from_url(
            url, decode_responses=True, max_connections=CONCURRENCY
        )
        await client.hset(
            "autobot:chat:bench",
            mapping={"id": "bench", "title": "bench", "created_at": "", "updated_at": ""},
        )

        async def append(n: int) -> None:
            message = json.dumps(
                {
                    "id": f"p{n}",
                    "role": "user",
                    "content": f"append {n} " + "x" * 100,
                    "created_at": now_iso(),
                    "status": "complete",
                }
            )
            await client.evalsha(script.sha, 4, *keys_for, "bench", message, now_iso())

        await client.script_load(script.source)
        started = time.perf_counter()
        for n in range(appends // 4):
            await append(n)
        sequential = (appends // 4) / (time.perf_counter() - started)

        per_task = appends // CONCURRENCY

        async def worker() -> None:
            for n in range(per_task):
                await append(n)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        concurrent = per_task * CONCURRENCY / (time.perf_counter() - started)

        samples = []
        for _ in range(LIST_SAMPLES):
            started = time.perf_counter()
            ids = await client.zrevrange("autobot:chats", 0, LIST_LIMIT - 1)
            async with client.pipeline(transaction=False) as pipe:
                for chat_id in ids:
                    pipe.hgetall(f"autobot:chat:{chat_id}")
                    pipe.llen(f"autobot:chat:{chat_id}:messages")
                replies = await pipe.execute()
            samples.append(time.perf_counter() - started)
            assert len(replies) == 2 * LIST_LIMIT
        await client.aclose()
        return {
            "appends/s, 1 task": sequential,
            f"appends/s, {CONCURRENCY} tasks": concurrent,
            "list p50 ms": statistics.median(samples) * 1000,
            "list p99 ms": percentile(samples, 0.99) * 1000,
        }

    return asyncio.run(main())


# -- memory -----------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


async def measure_open(directory: str) -> None:
    """Run in a fresh process: how much memory opening the store adds."""
    before = rss_mb()
    async with open_embedded_store(Path(directory)) as store:
        chats = len(await store.list_chats(limit=10**9))
        print(f"{rss_mb() - before:.0f} {chats}")


def embedded_memory(directory: Path) -> tuple[float, int]:
    result = subprocess.run(
        [sys.executable, __file__, "--measure-open", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    megabytes, chats = result.stdout.split()
    return float(megabytes), int(chats)


# -- running -------------------------------------------------------------------------------


def table(title: str, ours: dict[str, float], peer: dict[str, float], peer_name: str) -> None:
    print(f"\n{title}")
    print(f"{'metric':<22}{'AutoBot':>12}{peer_name:>14}{'ratio':>8}")
    for metric, value in ours.items():
        ratio = value / peer[metric] if "appends" in metric else peer[metric] / value
        print(f"{metric:<22}{value:>12.1f}{peer[metric]:>14.1f}{ratio:>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--measure-open", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_open:
        trio.run(measure_open, args.measure_open)
        return
    records = chat_records(args.chats, args.messages)
    print(
        f"{args.chats} chats x {args.messages} messages; {args.appends} appends "
        "(a quarter of them from one task); ratio > 1 means AutoBot is better"
    )

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)

        async def embedded() -> dict[str, float]:
            async with open_embedded_store(work_dir / "store") as store:
                return await bench_ours(store, records, args.appends)

        ours = trio.run(embedded)
        peer = sqlite_peer(work_dir / "peer.sqlite", records, args.appends)
        table("embedded store vs SQLite (WAL, synchronous=FULL)", ours, peer, "SQLite")
        megabytes, chats = embedded_memory(work_dir / "store")
        journal_mb = sum(p.stat().st_size for p in (work_dir / "store").iterdir()) / 2**20
        print(
            f"embedded store reopened: {chats} chats, {megabytes:.0f} MB of memory, "
            f"{journal_mb:.0f} MB on disk"
        )

        processes = RedisProcesses(work_dir / "redis")
        server = processes.redis()
        try:

            async def redis_backend() -> dict[str, float]:
                async with open_redis(server.url, decode_responses=True) as client:
                    async with open_redis_store(client) as store:
                        return await bench_ours(store, records, args.appends)

            ours = trio.run(redis_backend)
            peer = redis_py_peer(server.url, args.appends)
            table("Redis store vs redis-py asyncio, same script", ours, peer, "redis-py")
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
