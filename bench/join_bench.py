"""Joining an answer in progress: connect → snapshot with 100 answers streaming; Redis per token.

Separate processes, as in production: the AutoBot server (``python -m autobot
serve``), the fake LLM of the tests (``tests/support/fake_llm.py``), the askers
(this script again with ``--askers``: one WebSocket client per chat, each
asking for an answer and reading every token) and this process, which joins.
With ``--redis`` the server runs on a private ``redis-server`` on a free port
(the test kit's); otherwise on the embedded store.

1. Join latency. While ``--answers`` answers stream (a token every
   ``--token-delay`` s, 50 ms by default, each answer longer than the run:
   2,000 tokens/s in all, about a third of a core of server time; at 10 ms the
   one Trio thread would need more than a core and every latency is queueing),
   ``--joins`` WebSocket joins, ``--concurrency`` at a time, each to a random
   streaming chat: connect → handshake done, and connect → the ``snapshot``
   message. Each join then reads the next token and checks that it follows
   the snapshot's text (no gap, no repeat). The peer, in the same run:
   connecting to a chat with nothing in progress (the same route, store reads
   and subscription, no snapshot). Then
   ``--attaches`` SSE attaches, ``GET /api/chats/{id}/stream`` on a new
   connection, to the first event, beside ``GET /api/chats/{id}`` on a new
   connection. With ``--redis``, ``MONITOR`` then records the calls of 20
   WebSocket joins and 20 SSE attaches.
2. Token path. A fresh server, ``--token-answers`` answers of ``--tokens``
   tokens at once, nobody joining: the server's CPU time per token; with
   ``--redis``, ``INFO commandstats`` before and after (every command, those
   run inside Lua scripts included, per token) and, over a second such run,
   ``MONITOR``, which tells the calls the server process makes (round trips:
   an ``EVALSHA`` is one, whatever its script runs; a ``MULTI``…``EXEC`` is
   one) from the commands its scripts run, and names each call's script. The
   token path costs no extra round trip if each token is at most one
   ``EVALSHA`` of ``append_answer_token`` (or one a batch, for a script that
   takes several) and nothing else: before the answers were recorded, each
   token was one ``PUBLISH``.

    .venv/bin/python bench/join_bench.py [--redis] [--out results.json]
    .venv/bin/python bench/join_bench.py --quick   # fewer joins, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

# The tree this script is in, not another copy of AutoBot that happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobot.testing import RedisProcesses, run_autobot_server

ROOT = Path(__file__).resolve().parents[1]

FINAL = frozenset(("done", "cancelled", "error"))
IDLE_CHATS = 10
MONITORED_JOINS = 20


# -- small helpers -----------------------------------------------------------------------------


def cut(samples: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": at(0.50) * 1000,
        "p99_ms": at(0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPUWindow:
    """Cores used by each named process between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}
        self.started = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        return {
            name: (cpu_seconds(pid) - self.before[name]) / wall for name, pid in self.pids.items()
        }


def ws_url(base: str, chat_id: str) -> str:
    return base.replace("http://", "ws://", 1) + f"/api/chats/{chat_id}/ws"


def fake_words(text: str) -> int:
    """How many of the fake's tokens (``t0 ``, ``t1 ``, ...) ``text`` holds."""
    return text.count(" ")


async def new_chat(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/chats", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["chat"]["id"])


class Lines:
    """The lines a child process writes to a pipe, as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self._stream = stream
        self._lines: list[bytes] = []
        self._buffer = b""

    def __aiter__(self) -> Lines:
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise StopAsyncIteration
            *self._lines, self._buffer = (self._buffer + chunk).split(b"\n")
        return self._lines.pop(0).decode()


# -- the child processes -----------------------------------------------------------------------


async def start_fake_llm(nursery: trio.Nursery, tokens: int, delay: float) -> tuple[str, int]:
    """The fake LLM in a process of its own; its Ollama URL and pid. Ends with ``nursery``."""
    argv = [sys.executable, "-m", "tests.support.fake_llm", "--port", "0"]
    argv += ["--tokens", str(tokens), "--delay", str(delay)]
    process = await nursery.start(
        partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False, cwd=ROOT)
    )
    with trio.fail_after(20):
        async for line in Lines(process.stdout):
            if line.startswith("http://"):
                return line.strip(), process.pid
    raise RuntimeError("the fake LLM exited before it printed its URL")


class Askers:
    """The askers' process: one WebSocket per chat, each asked once and read to the end."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.status: dict[str, Any] = {"tokens": 0, "first": 0, "ended": []}
        self.all_streaming = trio.Event()

    async def follow(self) -> None:
        async for line in Lines(self.process.stdout):
            self.status = json.loads(line)
            if self.status["first"] == self.status["chats"]:
                self.all_streaming.set()

    @property
    def tokens(self) -> int:
        return int(self.status["tokens"])


async def start_askers(nursery: trio.Nursery, base: str, chat_ids: Sequence[str]) -> Askers:
    argv = [sys.executable, str(Path(__file__).resolve()), "--askers", base, *chat_ids]
    process = await nursery.start(
        partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False, cwd=ROOT)
    )
    askers = Askers(process)
    nursery.start_soon(askers.follow)
    with trio.fail_after(60):
        await askers.all_streaming.wait()
    return askers


async def ask(base: str, chat_id: str, status: dict[str, Any]) -> tuple[int, int, str]:
    """Ask in ``chat_id`` over its WebSocket and read to the end: (token events, last seq, end)."""
    events = seq = 0
    async with trio_websocket.open_websocket_url(ws_url(base, chat_id)) as ws:
        await ws.send_message(json.dumps({"type": "message", "content": "go"}))
        while True:
            event = json.loads(await ws.get_message())
            kind = event.get("type")
            if kind == "token":
                if events == 0:
                    status["first"] += 1
                events += 1
                status["tokens"] += 1
                seq = int(event["seq"])
            elif kind in FINAL:
                status["ended"].append(kind)
                return events, seq, str(kind)


async def askers_main(base: str, chat_ids: Sequence[str]) -> None:
    """``--askers``: ask in every chat at once; a status line on stdout ten times a second."""
    status: dict[str, Any] = {"chats": len(chat_ids), "tokens": 0, "first": 0, "ended": []}
    out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    async with trio.open_nursery() as nursery:
        for chat_id in chat_ids:
            nursery.start_soon(ask, base, chat_id, status)
        while True:
            await out.send_all(json.dumps(status).encode() + b"\n")
            await trio.sleep(0.1)


# -- Redis: INFO and MONITOR -------------------------------------------------------------------


def script_names() -> dict[str, str]:
    from autobot.storage._redis_scripts import SCRIPTS

    return {script.sha: name for name, script in SCRIPTS.items()}


# +<time> [<db> <client address or lua>] "<command>" "<first argument>" ...
_MONITOR_LINE = re.compile(
    rb'^\+?[\d.]+ \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?'
)


class MonitorCount:
    """What ``MONITOR`` saw: the calls clients made (round trips) and the commands scripts ran."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        """Round trips by kind: ``EVALSHA <script>``, ``PUBLISH barrier``, ``MULTI…EXEC``..."""
        self.commands: Counter[str] = Counter()
        """Every command, those in scripts and transactions included, by name."""

    def add(self, lines: Sequence[bytes], names: dict[str, str], skip: str) -> None:
        in_transaction: set[bytes] = set()
        for line in lines:
            match = _MONITOR_LINE.match(line)
            if match is None:
                continue
            client, command, first = match.group(1), match.group(2).upper(), match.group(3) or b""
            if client.decode() == skip:
                continue
            self.commands[command.decode()] += 1
            if client == b"lua":
                continue
            if command == b"MULTI":
                in_transaction.add(client)
            elif command in (b"EXEC", b"DISCARD"):
                in_transaction.discard(client)
                self.calls["MULTI…EXEC"] += 1
            elif client in in_transaction:
                continue  # sent and answered with its EXEC
            elif command in (b"EVALSHA", b"EVAL"):
                self.calls[f"{command.decode()} {names.get(first.decode(), '?')}"] += 1
            elif command == b"PUBLISH":
                kind = "barrier" if b"barrier" in first else "event"
                self.calls[f"PUBLISH {kind}"] += 1
            else:
                self.calls[command.decode()] += 1

    def round_trips(self) -> int:
        return sum(self.calls.values())

    def token_calls(self) -> dict[str, int]:
        """The calls that record and publish tokens (one script, or one a batch)."""
        return {kind: n for kind, n in self.calls.items() if is_token_call(kind)}


def is_token_call(kind: str) -> bool:
    command, _, script = kind.partition(" ")
    return command in ("EVALSHA", "EVAL") and script.startswith("append_answer_token")


@asynccontextmanager
async def monitoring(host: str, port: int, marker_client: Any) -> AsyncIterator[MonitorCount]:
    """Count what Redis executes inside the block (filled in when the block ends).

    The lines are read all along (Redis would otherwise hold them in memory)
    and up to a marker ``ECHO`` sent by ``marker_client`` after the block, so
    nothing the block made Redis do is missed; that client's own lines are
    left out.
    """
    count = MonitorCount()
    chunks: list[bytes] = []
    marker = os.urandom(8).hex().encode()
    seen = trio.Event()
    stream = await trio.open_tcp_stream(host, port)

    async def read() -> None:
        while chunk := await stream.receive_some(1 << 20):
            chunks.append(chunk)
            if marker in b"".join(chunks[-2:]):
                seen.set()

    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(b"MONITOR\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += await stream.receive_some(5)
        assert reply == b"+OK\r\n", reply
        nursery.start_soon(read)
        yield count
        await marker_client.echo(marker.decode())
        with trio.fail_after(30):
            await seen.wait()
        nursery.cancel_scope.cancel()
    lines = b"".join(chunks).split(b"\r\n")
    ending = next(line for line in lines if marker in line)
    skip = _MONITOR_LINE.match(ending)
    assert skip is not None
    count.add(lines[: lines.index(ending)], script_names(), skip.group(1).decode())


class RedisCounters:
    """``INFO commandstats`` (calls and microseconds by command) and bytes received, at a moment."""

    def __init__(self, commands: dict[str, tuple[int, int]], bytes_in: int) -> None:
        self.commands = commands
        self.bytes_in = bytes_in

    @classmethod
    async def read(cls, client: Any) -> RedisCounters:
        stats = await client.info("commandstats")
        info = await client.info("stats")
        commands = {
            name.removeprefix("cmdstat_").upper(): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        }
        return cls(commands, int(info["total_net_input_bytes"]))

    def since(self, before: RedisCounters) -> tuple[dict[str, tuple[int, int]], int]:
        """Calls and microseconds by command between ``before`` and this; and the bytes in."""
        changed = {}
        for name, (calls, usec) in self.commands.items():
            was_calls, was_usec = before.commands.get(name, (0, 0))
            if calls != was_calls and name != "INFO":  # INFO: this script's own reads
                changed[name] = (calls - was_calls, usec - was_usec)
        return changed, self.bytes_in - before.bytes_in


# -- 1. join latency ---------------------------------------------------------------------------


async def ws_join(base: str, chat_id: str, streaming: bool) -> dict[str, Any]:
    """One WebSocket join: times to the handshake and to the snapshot; whether the next follows."""
    started = time.perf_counter()
    async with trio_websocket.open_websocket_url(ws_url(base, chat_id)) as ws:
        handshake = time.perf_counter() - started
        if not streaming:
            return {"handshake": handshake}
        snapshot = json.loads(await ws.get_message())
        arrived = time.perf_counter() - started
        following = json.loads(await ws.get_message())
    assert snapshot["type"] == "snapshot", snapshot
    message = snapshot["message"]
    follows = (
        following.get("type") == "token"
        and following.get("answer_id") == message["id"]
        and following["seq"] == snapshot["seq"] + 1
        and following["delta"].startswith(f"t{fake_words(message['content'])} ")
    )
    return {"handshake": handshake, "snapshot": arrived, "seq": snapshot["seq"], "follows": follows}


async def sse_attach(client: httpx.AsyncClient, chat_id: str) -> dict[str, Any]:
    """One SSE attach on a new connection: time to its first event; does the next token follow?"""
    started = time.perf_counter()
    events: list[dict[str, str]] = []
    event: dict[str, str] = {}
    first = 0.0
    async with client.stream("GET", f"/api/chats/{chat_id}/stream") as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if line:
                field, _, value = line.partition(": ")
                event[field] = value
                continue
            if not event:
                continue
            if not events:
                first = time.perf_counter() - started
            events.append(event)
            event = {}
            if len(events) == 2:
                break
    snapshot, following = events
    assert snapshot["event"] == "snapshot", snapshot
    data, next_data = json.loads(snapshot["data"]), json.loads(following["data"])
    answer_id, seq = data["message"]["id"], data["seq"]
    follows = (
        following["event"] == "token"
        and following["id"] == f"{answer_id}:{seq + 1}"
        and next_data["delta"].startswith(f"t{fake_words(data['message']['content'])} ")
    )
    return {"first_event": first, "seq": seq, "follows": follows}


async def chat_get(client: httpx.AsyncClient, chat_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    response = await client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200, response.text
    return {"first_event": time.perf_counter() - started}


async def run_jobs(jobs: list[Any], concurrency: int) -> list[tuple[str, dict[str, Any]]]:
    """Run ``(kind, async function)`` jobs ``concurrency`` at a time; their results, by kind."""
    pending = iter(jobs)
    results: list[tuple[str, dict[str, Any]]] = []

    async def worker() -> None:
        for kind, job in pending:
            results.append((kind, await job()))

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return results


def new_connection_client(base: str) -> httpx.AsyncClient:
    """A client that opens a connection per request, as a reloaded page or a new device does."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base, timeout=30, limits=limits)


async def join_phase(
    args: argparse.Namespace, work: Path, redis: Any, client: Any
) -> dict[str, Any]:
    rng = random.Random(14)
    report: dict[str, Any] = {}
    tokens_per_answer = int(args.answer_seconds / args.token_delay)
    async with trio.open_nursery() as nursery:
        llm_url, fake_pid = await start_fake_llm(nursery, tokens_per_answer, args.token_delay)
        environ = {
            "AUTOBOT_DATA_DIR": str(work / "join"),
            "AUTOBOT_LLM_URL": llm_url,
        }
        if redis is not None:
            environ["AUTOBOT_REDIS_URL"] = redis.url
        server = await nursery.start(partial(run_autobot_server, environ, cwd=ROOT))
        base = server.url
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            streaming = [await new_chat(http) for _ in range(args.answers)]
            idle = [await new_chat(http) for _ in range(IDLE_CHATS)]
        # The same connections on a server with nothing to do: what the load adds.
        quiet = await run_jobs(
            [("idle", partial(ws_join, base, rng.choice(idle), False)) for _ in range(100)],
            args.concurrency,
        )
        report["ws_quiet_handshake"] = cut([r["handshake"] for _, r in quiet])
        askers = await start_askers(nursery, base, streaming)
        # The last second of the warm-up, with nobody joining, sets the token rate to compare.
        await trio.sleep(max(0.0, args.warmup - 1.0))
        quiet_tokens, quiet_started = askers.tokens, time.perf_counter()
        await trio.sleep(min(1.0, args.warmup))
        report["tokens_per_s_before_joins"] = (askers.tokens - quiet_tokens) / (
            time.perf_counter() - quiet_started
        )
        pids = {
            "server": server.process.pid,
            "askers": askers.process.pid,
            "fake LLM": fake_pid,
            "joiners": os.getpid(),
        }
        if redis is not None:
            pids["redis"] = redis.process.pid
        cpu = CPUWindow(pids)
        cpu.start()
        tokens_before, load_before = askers.tokens, os.getloadavg()[0]

        ws_jobs = [
            ("stream", partial(ws_join, base, rng.choice(streaming), True))
            for _ in range(args.joins)
        ] + [
            ("idle", partial(ws_join, base, rng.choice(idle), False))
            for _ in range(args.joins // 5)
        ]
        rng.shuffle(ws_jobs)
        started = time.perf_counter()
        ws_results = await run_jobs(ws_jobs, args.concurrency)
        report["ws_seconds"] = time.perf_counter() - started

        async with new_connection_client(base) as fresh:
            sse_jobs = [
                ("attach", partial(sse_attach, fresh, rng.choice(streaming)))
                for _ in range(args.attaches)
            ] + [
                ("get", partial(chat_get, fresh, rng.choice(idle)))
                for _ in range(args.attaches // 2)
            ]
            rng.shuffle(sse_jobs)
            sse_results = await run_jobs(sse_jobs, args.concurrency)

        report["cpu_cores"] = cpu.stop()
        wall = time.perf_counter() - cpu.started
        report["tokens_per_s_delivered"] = (askers.tokens - tokens_before) / wall
        report["tokens_per_s_sent"] = args.answers / args.token_delay
        report["load_1min"] = [load_before, os.getloadavg()[0]]

        joins = [r for kind, r in ws_results if kind == "stream"]
        report["ws_snapshot"] = cut([r["snapshot"] for r in joins])
        report["ws_handshake"] = cut([r["handshake"] for r in joins])
        report["ws_idle_handshake"] = cut(
            [r["handshake"] for kind, r in ws_results if kind == "idle"]
        )
        report["ws_follows"] = sum(r["follows"] for r in joins)
        seqs = sorted(r["seq"] for r in joins)
        report["ws_seq"] = {"p50": seqs[len(seqs) // 2], "max": seqs[-1]}
        attaches = [r for kind, r in sse_results if kind == "attach"]
        report["sse_first_event"] = cut([r["first_event"] for r in attaches])
        report["sse_follows"] = sum(r["follows"] for r in attaches)
        report["http_get"] = cut([r["first_event"] for kind, r in sse_results if kind == "get"])
        report["askers_ended_early"] = len(askers.status["ended"])

        if redis is not None:
            report["redis_calls_per_join"] = await monitored_joins(
                base, streaming, rng, redis, client
            )

        askers.process.terminate()
        await askers.process.wait()
        await server.stop()
        nursery.cancel_scope.cancel()
    return report


async def monitored_joins(
    base: str, streaming: Sequence[str], rng: random.Random, redis: Any, client: Any
) -> dict[str, Any]:
    """The Redis calls of a WebSocket join and of an SSE attach, while the answers stream.

    The answers' own calls go on meanwhile: their token and lease calls are
    left out, and whatever else the server does by itself (its background
    polling) is measured over a window without joins and subtracted.
    """
    windows: dict[str, tuple[MonitorCount, float]] = {}
    async with new_connection_client(base) as fresh:
        joins: dict[str, Any] = {
            "ws": lambda: ws_join(base, rng.choice(streaming), True),
            "sse": lambda: sse_attach(fresh, rng.choice(streaming)),
            "background": partial(trio.sleep, 0.1),
        }
        for name, join in joins.items():
            started = time.perf_counter()
            async with monitoring(redis.host, redis.port, client) as count:
                for _ in range(MONITORED_JOINS):
                    await join()
            windows[name] = count, time.perf_counter() - started
    background, background_s = windows.pop("background")
    result: dict[str, Any] = {}
    for name, (count, seconds) in windows.items():
        calls = {}
        for kind, n in count.calls.items():
            if is_token_call(kind) or kind == "EVALSHA renew_lease":
                continue
            own = (n - background.calls[kind] * seconds / background_s) / MONITORED_JOINS
            if own >= 0.05:
                calls[kind] = own
        xrange = count.commands["XRANGE"] - background.commands["XRANGE"] * seconds / background_s
        result[name] = {
            "round_trips": sum(calls.values()),
            "calls": calls,
            "XRANGE": xrange / MONITORED_JOINS,
        }
    return result


# -- 2. the token path -------------------------------------------------------------------------


async def answers_at_once(base: str, chat_ids: Sequence[str]) -> tuple[int, list[str]]:
    """Ask in every chat at once and read every answer to its end: (tokens recorded, ends)."""
    results: list[tuple[int, int, str]] = []
    status: dict[str, Any] = {"tokens": 0, "first": 0, "ended": []}

    async def one(chat_id: str) -> None:
        results.append(await ask(base, chat_id, status))

    async with trio.open_nursery() as nursery:
        for chat_id in chat_ids:
            nursery.start_soon(one, chat_id)
    return sum(seq for _, seq, _ in results), [end for _, _, end in results]


async def token_phase(
    args: argparse.Namespace, work: Path, redis: Any, client: Any
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        llm_url, _ = await start_fake_llm(nursery, args.tokens, args.token_phase_delay)
        environ = {"AUTOBOT_DATA_DIR": str(work / "tokens"), "AUTOBOT_LLM_URL": llm_url}
        if redis is not None:
            environ["AUTOBOT_REDIS_URL"] = redis.url
        server = await nursery.start(partial(run_autobot_server, environ, cwd=ROOT))
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            chats = [await new_chat(http) for _ in range(2 * args.token_answers + 5)]
        await answers_at_once(server.url, chats[-5:])  # loads the scripts, warms the paths

        batch = chats[: args.token_answers]
        cpu = CPUWindow({"server": server.process.pid})
        before = await RedisCounters.read(client) if redis is not None else None
        cpu.start()
        tokens, ends = await answers_at_once(server.url, batch)
        cores = cpu.stop()["server"]
        wall = time.perf_counter() - cpu.started
        report["answers"], report["tokens"] = len(batch), tokens
        report["ends"] = dict(Counter(ends))
        report["server_cpu_us_per_token"] = cores * wall / tokens * 1e6
        if redis is not None:
            assert before is not None
            delta, bytes_in = (await RedisCounters.read(client)).since(before)
            report["commands_per_token"] = {k: calls / tokens for k, (calls, _) in delta.items()}
            report["redis_usec_per_token"] = sum(usec for _, usec in delta.values()) / tokens
            report["redis_usec_per_call"] = {k: usec / calls for k, (calls, usec) in delta.items()}
            report["redis_bytes_in_per_token"] = bytes_in / tokens

            batch = chats[args.token_answers : 2 * args.token_answers]
            async with monitoring(redis.host, redis.port, client) as count:
                tokens, _ = await answers_at_once(server.url, batch)
            token_calls = count.token_calls()
            per_token = sum(token_calls.values())
            report["monitor_tokens"] = tokens
            report["token_calls"] = token_calls
            report["round_trips_per_token"] = per_token / tokens
            report["event_publishes_per_token"] = count.calls["PUBLISH event"] / tokens
            report["round_trips_per_answer_besides_tokens"] = (
                count.round_trips() - per_token
            ) / len(batch)
            report["calls_per_answer"] = {
                k: v / len(batch) for k, v in count.calls.most_common() if not is_token_call(k)
            }
            report["monitor_commands_per_token"] = {
                k: v / tokens for k, v in count.commands.most_common()
            }
        await server.stop()
        nursery.cancel_scope.cancel()
    return report


# -- running -----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, work: Path, redis: Any) -> dict[str, Any]:
    if redis is None:
        return {
            "join": await join_phase(args, work, None, None),
            "token": await token_phase(args, work, None, None),
        }
    from autobot.redis import open_redis

    async with open_redis(redis.url, decode_responses=True) as client:
        return {
            "join": await join_phase(args, work, redis, client),
            "token": await token_phase(args, work, redis, client),
        }


def ms(c: dict[str, float]) -> str:
    return f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f} / {c['max_ms']:.2f} ms"


def calls_text(calls: dict[str, float]) -> str:
    return ", ".join(f"{name} {n:.2f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1]))


def print_table(args: argparse.Namespace, result: dict[str, Any]) -> None:
    join, token = result["join"], result["token"]
    store = "Redis" if args.redis else "embedded"
    cores = join["cpu_cores"]
    rows = [
        (
            f"answers streaming (a token every {args.token_delay * 1000:g} ms)",
            f"{args.answers}",
        ),
        (
            "token events/s reaching the askers during the joins (before them; the fake sends)",
            f"{join['tokens_per_s_delivered']:,.0f} ({join['tokens_per_s_before_joins']:,.0f}; "
            f"{join['tokens_per_s_sent']:,.0f})",
        ),
        (
            f"**WS join: connect → snapshot**, p50 / p99 / max "
            f"({join['ws_snapshot']['n']} joins, {args.concurrency} at a time)",
            f"**{ms(join['ws_snapshot'])}**",
        ),
        ("WS join: connect → handshake done", ms(join["ws_handshake"])),
        (
            "peer: WS connect to a chat with nothing streaming → handshake",
            ms(join["ws_idle_handshake"]),
        ),
        (
            "peer: the same, with nothing streaming anywhere",
            ms(join["ws_quiet_handshake"]),
        ),
        (
            "snapshot size, seq p50 / max",
            f"{join['ws_seq']['p50']} / {join['ws_seq']['max']} tokens",
        ),
        (
            "WS joins whose next token followed the snapshot",
            f"{join['ws_follows']} of {join['ws_snapshot']['n']}",
        ),
        (
            f"**SSE attach → first event** ({join['sse_first_event']['n']}, new connection each)",
            f"**{ms(join['sse_first_event'])}**",
        ),
        ("peer: GET /api/chats/{id}, new connection each", ms(join["http_get"])),
        (
            "SSE attaches whose next token followed the snapshot",
            f"{join['sse_follows']} of {join['sse_first_event']['n']}",
        ),
        (
            "CPU during the joins (cores): " + " / ".join(cores),
            " / ".join(f"{v:.2f}" for v in cores.values()),
        ),
        (
            "load average (1 min) at start / end of the joins",
            f"{join['load_1min'][0]:.2f} / {join['load_1min'][1]:.2f}",
        ),
        (
            f"server CPU per token, {token['answers']} answers × {args.tokens} tokens, no joiners",
            f"{token['server_cpu_us_per_token']:.0f} µs "
            f"({token['tokens']:,} tokens recorded of {token['answers'] * args.tokens:,} sent)",
        ),
    ]
    if args.redis:
        per_join = join["redis_calls_per_join"]
        rows += [
            (
                "**Redis round trips per token** (MONITOR)",
                f"**{token['round_trips_per_token']:.3f}** "
                f"({', '.join(token['token_calls'])}; PUBLISH of an event "
                f"{token['event_publishes_per_token']:.3f})",
            ),
            (
                "Redis commands per token, scripts' included (INFO commandstats)",
                calls_text({k: v for k, v in token["commands_per_token"].items() if v >= 0.005}),
            ),
            (
                "Redis time / bytes in, per token (all commands of the run)",
                f"{token['redis_usec_per_token']:.1f} µs / "
                f"{token['redis_bytes_in_per_token']:.0f} B "
                f"(an EVALSHA {token['redis_usec_per_call'].get('EVALSHA', 0):.1f} µs, "
                f"of it XADD {token['redis_usec_per_call'].get('XADD', 0):.1f} µs)",
            ),
            (
                "Redis round trips per answer besides its tokens",
                f"{token['round_trips_per_answer_besides_tokens']:.1f} "
                f"({calls_text(token['calls_per_answer'])})",
            ),
            (
                "Redis round trips per WS join",
                f"{per_join['ws']['round_trips']:.1f} ({calls_text(per_join['ws']['calls'])}); "
                f"XRANGE {per_join['ws']['XRANGE']:.1f}",
            ),
            (
                "Redis round trips per SSE attach",
                f"{per_join['sse']['round_trips']:.1f} ({calls_text(per_join['sse']['calls'])}); "
                f"XRANGE {per_join['sse']['XRANGE']:.1f}",
            ),
        ]
    print(f"\nJoining an answer in progress, {store} store\n")
    print("| measure | result |")
    print("| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if join["askers_ended_early"] or set(token["ends"]) != {"done"}:
        print(f"\nanswers that ended early: {join['askers_ended_early']}; ends {token['ends']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", action="store_true", help="run on a private redis-server")
    parser.add_argument("--answers", type=int, default=100, help="answers streaming at once")
    parser.add_argument("--token-delay", type=float, default=0.05, help="seconds between tokens")
    parser.add_argument(
        "--answer-seconds", type=float, default=120, help="how long an answer lasts"
    )
    parser.add_argument("--joins", type=int, default=500, help="WebSocket joins")
    parser.add_argument("--attaches", type=int, default=200, help="SSE attaches")
    parser.add_argument("--concurrency", type=int, default=4, help="joins at a time")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds streaming before joins")
    parser.add_argument("--token-answers", type=int, default=20, help="answers, token path")
    parser.add_argument("--tokens", type=int, default=200, help="tokens an answer, token path")
    parser.add_argument(
        "--token-phase-delay", type=float, default=0.01, help="seconds between tokens, token path"
    )
    parser.add_argument("--quick", action="store_true", help="100 joins, 40 attaches")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--askers", nargs="+", metavar=("URL", "CHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.askers:
        trio.run(askers_main, args.askers[0], args.askers[1:])
        return
    if args.quick:
        args.joins, args.attaches = 100, 40
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        redis = None
        if args.redis:
            processes = RedisProcesses(work / "redis")
            redis = processes.redis()
        try:
            result = trio.run(bench, args, work, redis)
        finally:
            if redis is not None:
                processes.stop_all()
    result["args"] = {k: v for k, v in vars(args).items() if k not in ("askers", "out")}
    print_table(args, result)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
