"""Streaming chat against the fake LLM: what AutoBot adds, measured from outside.

Three processes, as in production: the AutoBot server (``run.py``, embedded
store), the fake LLM (``tests/support/fake_llm.py``) and this client. Each
measurement is taken through AutoBot and, as the peer, straight from the fake
LLM in the same run:

1. time to first token (median over 200 answers): AutoBot's minus the fake's;
2. tokens per second through one long stream, over reading the fake directly;
3. client disconnect to the provider seeing its connection closed (p99 over
   100 answers; both processes read the same ``time.monotonic()`` clock);
4. 500 WebSocket chats streaming at once: all complete? p50/p99 time to first
   token and to the whole answer, and the server's peak memory.

    .venv/bin/python bench/chat_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Process:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.line_added = trio.Event()

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while chunk := await stream.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode() for line in lines)
            self.line_added.set()
            self.line_added = trio.Event()

    async def wait_for_line(self, predicate) -> str:
        while True:
            for line in self.lines:
                if predicate(line):
                    return line
            await self.line_added.wait()


@asynccontextmanager
async def child(argv: list[str], env: dict[str, str]) -> AsyncIterator[Process]:
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )
        wrapped = Process(process)
        nursery.start_soon(wrapped.collect, process.stdout)
        nursery.start_soon(wrapped.collect, process.stderr)
        try:
            yield wrapped
        finally:
            process.terminate()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
            process.kill()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def fake_llm(*args: str) -> AsyncIterator[tuple[Process, str]]:
    argv = [sys.executable, "-m", "tests.support.fake_llm", "--port", "0", "--events", *args]
    async with child(argv, dict(os.environ)) as process:
        with trio.fail_after(20):
            url = await process.wait_for_line(lambda line: line.startswith("http://"))
        yield process, url.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def autobot(llm_url: str, data_dir: str) -> AsyncIterator[tuple[Process, str]]:
    """``run.py`` on the embedded store, quiet (warnings only); yields it and its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")}
    env |= {
        "AUTOBOT_PORT": str(port),
        "AUTOBOT_DATA_DIR": data_dir,
        "AUTOBOT_LLM_URL": llm_url,
        "AUTOBOT_LOG_LEVEL": "warning",
    }
    base = f"http://127.0.0.1:{port}"
    async with child([sys.executable, "run.py"], env) as process:
        async with httpx.AsyncClient(base_url=base) as client:
            with trio.fail_after(20):
                while True:
                    try:
                        await client.get("/api/health")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.02)
        yield process, base


async def new_chat(client: httpx.AsyncClient) -> str:
    return (await client.post("/api/chats", json={})).json()["chat"]["id"]


# -- 1 and 2: first token and throughput --------------------------------------------------


async def first_token_autobot(client: httpx.AsyncClient) -> float:
    chat_id = await new_chat(client)
    started = time.perf_counter()
    async with client.stream(
        "POST", f"/api/chats/{chat_id}/messages", json={"content": "hi", "stream": True}
    ) as response:
        elapsed = None
        async for chunk in response.aiter_bytes():
            if elapsed is None and b"event: token" in chunk:
                elapsed = time.perf_counter() - started
    assert elapsed is not None
    return elapsed


async def first_token_direct(client: httpx.AsyncClient, llm_url: str) -> float:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.perf_counter()
    async with client.stream("POST", f"{llm_url}/api/chat", json=body) as response:
        elapsed = None
        async for line in response.aiter_lines():
            if elapsed is None and json.loads(line).get("message", {}).get("content"):
                elapsed = time.perf_counter() - started
    assert elapsed is not None
    return elapsed


async def tokens_per_second_autobot(client: httpx.AsyncClient, tokens: int) -> float:
    """Tokens arrive as text deltas; several may share one event when they queue up."""
    chat_id = await new_chat(client)
    text = []
    started = time.perf_counter()
    async with client.stream(
        "POST", f"/api/chats/{chat_id}/messages", json={"content": "go", "stream": True}
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith('data: {"delta"'):
                text.append(json.loads(line[6:])["delta"])
    elapsed = time.perf_counter() - started
    assert "".join(text).count(" ") == tokens  # the fake's tokens are "t0 ", "t1 ", ...
    return tokens / elapsed


async def tokens_per_second_direct(client: httpx.AsyncClient, llm_url: str, tokens: int) -> float:
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True}
    count = 0
    started = time.perf_counter()
    async with client.stream("POST", f"{llm_url}/api/chat", json=body) as response:
        async for line in response.aiter_lines():
            if not json.loads(line).get("done"):
                count += 1
    assert count == tokens, count
    return count / (time.perf_counter() - started)


# -- 3: disconnect ---------------------------------------------------------------------------


async def disconnect_delays(client: httpx.AsyncClient, fake: Process, answers: int) -> list[float]:
    delays = []
    for _ in range(answers):
        chat_id = await new_chat(client)
        seen = len([line for line in fake.lines if '"client_closed"' in line])
        async with client.stream(
            "POST", f"/api/chats/{chat_id}/messages", json={"content": "x", "stream": True}
        ) as response:
            tokens = 0
            async for chunk in response.aiter_bytes():
                tokens += chunk.count(b"event: token")
                if tokens >= 3:
                    break
            closed_at = time.monotonic()
            await response.aclose()
        with trio.fail_after(10):
            while True:
                closed = [line for line in fake.lines if '"client_closed"' in line]
                if len(closed) > seen:
                    break
                await fake.line_added.wait()
        delays.append(json.loads(closed[-1])["monotonic"] - closed_at)
        # Drop the pooled connection too, so the next answer starts alike.
        await client.aclose()
        client = httpx.AsyncClient(base_url=str(client.base_url), timeout=None)
    await client.aclose()
    return delays


# -- 4: many WebSockets ------------------------------------------------------------------------


async def websocket_chat(
    base_url: str, chat_id: str, results: list[tuple[float, float]], start: trio.Event
) -> None:
    url = base_url.replace("http://", "ws://") + f"/api/chats/{chat_id}/ws"
    async with trio_websocket.open_websocket_url(url) as ws:
        await start.wait()
        started = time.perf_counter()
        await ws.send_message(json.dumps({"type": "message", "content": "hello"}))
        first = None
        while True:
            event = json.loads(await ws.get_message())
            if event["type"] == "token" and first is None:
                first = time.perf_counter() - started
            if event["type"] in ("done", "cancelled", "error"):
                assert event["type"] == "done", event
                results.append((first or 0.0, time.perf_counter() - started))
                return


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def many_websockets(base_url: str, pid: int, fake_pid: int, chats: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=None) as client:
        chat_ids = [await new_chat(client) for _ in range(chats)]
    rss_before = peak_rss_mb(pid)
    results: list[tuple[float, float]] = []
    start = trio.Event()
    started = time.perf_counter()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for chat_id in chat_ids:
                nursery.start_soon(websocket_chat, base_url, chat_id, results, start)
            await trio.sleep(2)  # let every socket connect before the answers start
            started = time.perf_counter()
            cpu_before = {
                name: cpu_seconds(p)
                for name, p in (("server", pid), ("fake LLM", fake_pid), ("clients", os.getpid()))
            }
            start.set()
    wall = time.perf_counter() - started
    cpu = {
        name: (cpu_seconds(p) - cpu_before[name]) / wall
        for name, p in (("server", pid), ("fake LLM", fake_pid), ("clients", os.getpid()))
    }
    return {
        **{f"CPU cores used, {name}": share for name, share in cpu.items()},
        "completed": len(results),
        "wall s": time.perf_counter() - started,
        "first token p50 ms": statistics.median(r[0] for r in results) * 1000,
        "first token p99 ms": percentile([r[0] for r in results], 0.99) * 1000,
        "answer p50 s": statistics.median(r[1] for r in results),
        "answer p99 s": percentile([r[1] for r in results], 0.99),
        "server peak MB before": rss_before,
        "server peak MB": peak_rss_mb(pid),
    }


# -- running ---------------------------------------------------------------------------------


async def main(quick: bool) -> None:
    samples = 50 if quick else 200
    long_tokens = 5_000 if quick else 20_000
    answers = 30 if quick else 100
    sockets = 100 if quick else 500
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as data:
        # 1. time to first token, and 2. throughput, on a fake that answers at once
        async with fake_llm("--tokens", "5", "--delay", "0") as (fake, llm_url):
            async with autobot(llm_url, data + "/a") as (server, base):
                async with httpx.AsyncClient(base_url=base, timeout=None) as client:
                    for _ in range(10):  # warm up both paths
                        await first_token_autobot(client)
                        await first_token_direct(client, llm_url)
                    ours = [await first_token_autobot(client) for _ in range(samples)]
                    direct = [await first_token_direct(client, llm_url) for _ in range(samples)]
        report["first token median ms, AutoBot"] = statistics.median(ours) * 1000
        report["first token median ms, fake directly"] = statistics.median(direct) * 1000
        report["first token added ms (target < 2)"] = (
            statistics.median(ours) - statistics.median(direct)
        ) * 1000

        async with fake_llm("--tokens", str(long_tokens), "--delay", "0") as (fake, llm_url):
            async with autobot(llm_url, data + "/b") as (server, base):
                async with httpx.AsyncClient(base_url=base, timeout=None) as client:
                    ours_rate = statistics.median(
                        [await tokens_per_second_autobot(client, long_tokens) for _ in range(3)]
                    )
                    direct_rate = statistics.median(
                        [
                            await tokens_per_second_direct(client, llm_url, long_tokens)
                            for _ in range(3)
                        ]
                    )
        report["tokens/s, AutoBot"] = ours_rate
        report["tokens/s, fake directly"] = direct_rate
        report["tokens/s ratio (target >= 0.8)"] = ours_rate / direct_rate

        # 3. disconnect to upstream close, on a slow fake
        async with fake_llm("--tokens", "100000", "--delay", "0.005") as (fake, llm_url):
            async with autobot(llm_url, data + "/c") as (server, base):
                client = httpx.AsyncClient(base_url=base, timeout=None)
                delays = await disconnect_delays(client, fake, answers)
        report["disconnect to upstream close p50 ms"] = statistics.median(delays) * 1000
        report["disconnect to upstream close p99 ms (target < 20)"] = (
            percentile(delays, 0.99) * 1000
        )

        # 4. many WebSocket chats at once: 50 tokens each, 20 ms apart (about 1 s an answer)
        async with fake_llm("--tokens", "50", "--delay", "0.02") as (fake, llm_url):
            async with autobot(llm_url, data + "/d") as (server, base):
                ws = await many_websockets(base, server.process.pid, fake.process.pid, sockets)
        for key, value in ws.items():
            report[f"{sockets} WebSocket chats: {key}"] = value

    width = max(len(key) for key in report)
    for key, value in report.items():
        print(
            f"{key:<{width}}  {value:10.2f}"
            if isinstance(value, float)
            else f"{key:<{width}}  {value:>10}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, 100 sockets")
    trio.run(main, parser.parse_args().quick)
