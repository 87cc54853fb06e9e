"""Memory held by idle chat WebSockets: bytes per socket, and 10,000 under 1 GiB.

The real server runs as a process (``python -m autobot serve``) on the
embedded store, or with ``--redis`` on a private ``redis-server``; the fake
LLM runs in this process. A client process opens ``--sockets`` idle
WebSockets on ``/api/chats/<id>/ws``, spread round-robin over ``--chats``
chats, ``--concurrency`` handshakes at a time, in steps of ``--step``. One
client process holds 10,000 trio-websocket clients in about 250 MiB and, on
two cores, opens them faster than two processes that compete with the server
for the CPU; ``--clients 2`` splits them all the same. After each step the
server's ``VmRSS`` and ``VmHWM`` are read from ``/proc/<pid>/status``; the
slope of RSS over sockets is the cost of one idle WebSocket. At the end one
answer is started in the first chat and every socket of that chat must
receive its ``done`` event, so the sockets counted are live subscribers, not
half-open connections.

With ``--tracemalloc`` the server runs under ``python -X tracemalloc=25``
through a small wrapper whose SIGUSR1 handler dumps a snapshot; one is taken
after warm-up and one after the last socket, and the diff's top allocation
sites are printed per socket, by allocating line and by the first frame
outside the standard library and Trio (the code that asked for the memory).
RSS under tracemalloc is inflated by its own bookkeeping: read the slope from
a run without it.

The soft ``RLIMIT_NOFILE`` is raised to the hard limit here, and so for every
process started from here.

    .venv/bin/python bench/ws_memory_bench.py [--sockets 10000] [--redis]
        [--tracemalloc [--keep-snapshots DIR]] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

from autobot.testing import (
    AutoBotServer,
    RedisProcesses,
    Scenario,
    run_autobot_server,
    serve_fake_llm,
    settings_environ,
)

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
SETTLE_S = 1.0
HANDSHAKE_S = 30.0
HANDSHAKE_TRIES = 3
FANOUT_S = 60.0  # for every socket of the first chat to get the answer's end
CLIENT_STOP_S = 60.0
SERVER_STOP_S = 120.0
STARTUP_S = 180.0  # importing everything under tracemalloc=25 takes tens of seconds
SNAPSHOT_BUDGET_S = 120.0
STEP_BUDGET_S = 300.0
TOP_SITES = 25
FRAMES = 25
ANSWER_TOKENS = 5

# The server under tracemalloc: SIGUSR1 writes a snapshot, in the main thread
# between two bytecodes, while the Trio loop waits or runs.
SNAPSHOT_WRAPPER = """
import gc, json, os, signal, sys, tracemalloc

_taken = 0

def _dump(signum, frame):
    global _taken
    _taken += 1
    gc.collect()
    path = os.path.join(os.environ["WS_BENCH_SNAPSHOTS"], f"snapshot-{_taken}.pickle")
    tracemalloc.take_snapshot().dump(path)
    print(json.dumps({"msg": "snapshot written", "path": path}), file=sys.stderr, flush=True)

signal.signal(signal.SIGUSR1, _dump)
from autobot.__main__ import main
sys.exit(main(["serve"]))
"""


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by child processes)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in KiB."""
    text = await trio.Path(f"/proc/{pid}/status").read_text()
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


class Lines:
    """Newline-separated JSON messages over a pair of byte streams."""

    def __init__(self, receive: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        self._receive, self._send = receive, send
        self._buffer = b""

    async def read(self) -> dict[str, Any] | None:
        """The next message, or None at end of stream."""
        while b"\n" not in self._buffer:
            chunk = await self._receive.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    async def write(self, message: dict[str, Any]) -> None:
        await self._send.send_all(json.dumps(message).encode() + b"\n")

    async def close(self) -> None:
        await self._send.aclose()


# -- the client process ----------------------------------------------------------------------


@dataclass
class ClientState:
    """What one client process holds and has seen."""

    url: str
    chat_ids: list[str]
    opened: int = 0
    refused: int = 0
    failed: int = 0
    closed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    done_by_chat: dict[str, int] = field(default_factory=dict)

    def note(self, error: BaseException) -> None:
        """Count an error by its first line (a refused handshake names its status and code)."""
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        text = f"{type(error).__name__}: {error}"
        if isinstance(error, trio_websocket.ConnectionRejected):
            text = f"ConnectionRejected {error.status_code}: {error.body[:160]!r}"
        self.errors[text[:200]] = self.errors.get(text[:200], 0) + 1


async def hold_socket(  # noqa: ASYNC114 - started only by open_socket
    state: ClientState,
    limiter: trio.CapacityLimiter,
    chat_id: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, then read what the server sends (nothing until an answer runs).

    The connection's own nursery takes the errors of trio-websocket's reader
    task, so a refused handshake fails this socket's start, not the client.
    """
    opened = False
    try:
        async with trio.open_nursery() as own:
            async with limiter:
                with trio.fail_after(HANDSHAKE_S):
                    ws = await trio_websocket.connect_websocket_url(
                        own, f"{state.url}/api/chats/{chat_id}/ws"
                    )
            opened = True
            task_status.started()
            try:
                while True:
                    event = json.loads(await ws.get_message())
                    if event.get("type") == "done":
                        state.done_by_chat[chat_id] = state.done_by_chat.get(chat_id, 0) + 1
            except trio_websocket.ConnectionClosed:
                state.closed += 1
            own.cancel_scope.cancel()
    except Exception as error:
        if not opened:
            raise
        state.closed += 1
        state.note(error)


async def open_socket(
    state: ClientState, sockets: trio.Nursery, limiter: trio.CapacityLimiter, index: int
) -> None:
    chat_id = state.chat_ids[index % len(state.chat_ids)]
    for attempt in range(HANDSHAKE_TRIES):
        try:
            await sockets.start(hold_socket, state, limiter, chat_id)
        except Exception as error:
            state.refused += 1
            state.note(error)
            await trio.sleep(0.2 * (attempt + 1))
            continue
        state.opened += 1
        return
    state.failed += 1


async def client_main() -> None:
    """Open sockets when told (``{"open": [start, stop], "concurrency": n}``) and report."""
    lines = Lines(
        trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())),
        trio.lowlevel.FdStream(os.dup(sys.stdout.fileno())),
    )
    hello = await lines.read()
    assert hello is not None
    state = ClientState(hello["url"], hello["chat_ids"])
    async with trio.open_nursery() as sockets:
        while (command := await lines.read()) is not None:
            if "open" in command:
                start, stop = command["open"]
                limiter = trio.CapacityLimiter(command["concurrency"])
                started = time.perf_counter()
                async with trio.open_nursery() as openers:
                    for index in range(start, stop):
                        openers.start_soon(open_socket, state, sockets, limiter, index)
                seconds = time.perf_counter() - started
                await lines.write(
                    {
                        "opened": state.opened,
                        "refused": state.refused,
                        "failed": state.failed,
                        "errors": state.errors,
                        "closed": state.closed,
                        "seconds": seconds,
                        **await memory_kib(os.getpid()),
                    }
                )
            elif "report" in command:
                await lines.write(
                    {"opened": state.opened, "closed": state.closed, "done": state.done_by_chat}
                )
        sockets.cancel_scope.cancel()


# -- the benchmark ---------------------------------------------------------------------------


@dataclass
class Sample:
    sockets: int
    rss_kib: int
    hwm_kib: int
    open_s: float = 0.0
    client_rss_kib: int = 0


@dataclass
class Result:
    backend: str
    sockets: int
    chats: int
    clients: int
    tracemalloc: bool
    samples: list[Sample] = field(default_factory=list)
    held_rss_kib: int = 0
    refused: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closed_while_idle: int = 0
    fanout_expected: int = 0
    fanout_done: int = 0
    snapshots: list[str] = field(default_factory=list)

    @property
    def slope_bytes(self) -> float:
        """Least-squares RSS bytes per socket over the samples."""
        xs = [s.sockets for s in self.samples]
        ys = [s.rss_kib * 1024 for s in self.samples]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread

    @property
    def peak_kib(self) -> int:
        return max(s.hwm_kib for s in self.samples)


class Client:
    """One client process and its command lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdout is not None and process.stdin is not None
        self.lines = Lines(process.stdout, process.stdin)

    async def ask(self, command: dict[str, Any], into: list[dict[str, Any]], at: int) -> None:
        await self.lines.write(command)
        reply = await self.lines.read()
        if reply is None:
            raise EOFError("a client process exited")
        into[at] = reply


async def ask_all(clients: list[Client], commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = [{} for _ in clients]
    async with trio.open_nursery() as nursery:
        for at, (client, command) in enumerate(zip(clients, commands, strict=True)):
            nursery.start_soon(client.ask, command, replies, at)
    return replies


async def take_snapshot(server: AutoBotServer, directory: Path, number: int) -> str:
    """SIGUSR1 the wrapped server; the path of its snapshot once its log says it is written."""
    path = str(directory / f"snapshot-{number}.pickle")
    server.send_signal(signal.SIGUSR1)
    with trio.fail_after(SNAPSHOT_BUDGET_S):
        await server.read_until(
            lambda entry: entry.get("msg") == "snapshot written" and entry.get("path") == path
        )
    return path


async def warm_up(url: str, chat_id: str) -> None:
    """First connections pay one-off costs (imports, caches): keep them out of the slope."""
    for _ in range(20):
        async with trio_websocket.open_websocket_url(f"{url}/api/chats/{chat_id}/ws"):
            pass


async def run(args: argparse.Namespace, redis_url: str | None, work: Path) -> Result:
    result = Result(
        "redis" if redis_url else "embedded", args.sockets, args.chats, args.clients,
        args.tracemalloc,
    )  # fmt: skip
    snapshots = args.keep_snapshots or work / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(
            partial(serve_fake_llm, Scenario(tokens=ANSWER_TOKENS), keep_records=False)
        )
        environ = settings_environ(
            data_dir=work / "data", llm_url=fake.ollama_url, redis_url=redis_url, log_level="info"
        )
        environ["WS_BENCH_SNAPSHOTS"] = str(snapshots)
        argv = None
        if args.tracemalloc:
            wrapper = work / "snapshot_wrapper.py"
            wrapper.write_text(SNAPSHOT_WRAPPER)
            argv = [sys.executable, "-X", f"tracemalloc={FRAMES}", str(wrapper)]
        server = await nursery.start(
            partial(run_autobot_server, environ, argv=argv, cwd=ROOT, startup_s=STARTUP_S)
        )
        pid = server.process.pid
        ws_url = server.url.replace("http://", "ws://")

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            chat_ids = [
                (await http.post("/api/chats", json={})).json()["chat"]["id"]
                for _ in range(args.chats)
            ]
            await warm_up(ws_url, chat_ids[0])
            await trio.sleep(SETTLE_S)
            if args.tracemalloc:
                result.snapshots.append(await take_snapshot(server, snapshots, 1))
            memory = await memory_kib(pid)
            result.samples.append(Sample(0, memory["VmRSS"], memory["VmHWM"]))

            clients = [
                Client(
                    await trio.lowlevel.open_process(
                        [sys.executable, __file__, "--client"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        cwd=ROOT,
                    )
                )
                for _ in range(args.clients)
            ]
            try:
                for client in clients:
                    await client.lines.write({"url": ws_url, "chat_ids": chat_ids})
                await open_in_steps(clients, args, pid, result)
                if args.tracemalloc:
                    result.snapshots.append(await take_snapshot(server, snapshots, 2))
                await trio.sleep(args.hold)
                result.held_rss_kib = (await memory_kib(pid))["VmRSS"]
                await check_fanout(clients, http, chat_ids[0], args.chats, result)
            finally:
                with trio.CancelScope(shield=True):
                    await stop_clients(clients)
        with trio.CancelScope(shield=True):
            await stop_server(server)
        nursery.cancel_scope.cancel()
    return result


async def open_in_steps(
    clients: list[Client], args: argparse.Namespace, pid: int, result: Result
) -> None:
    """Open the sockets ``--step`` at a time, split over the clients; sample after each step."""
    share = max(1, args.concurrency // args.clients)
    done = 0
    while done < args.sockets:
        step = min(args.step, args.sockets - done)
        cuts = [done + step * i // args.clients for i in range(args.clients + 1)]
        commands = [
            {"open": [cuts[i], cuts[i + 1]], "concurrency": share} for i in range(args.clients)
        ]
        started = time.perf_counter()
        with trio.fail_after(STEP_BUDGET_S):
            replies = await ask_all(clients, commands)
        seconds = time.perf_counter() - started
        done += step
        await trio.sleep(SETTLE_S)
        memory = await memory_kib(pid)
        opened = sum(reply["opened"] for reply in replies)
        result.refused = sum(reply["refused"] for reply in replies)
        result.failed = sum(reply["failed"] for reply in replies)
        result.errors = {}
        for reply in replies:
            for text, count in reply["errors"].items():
                result.errors[text] = result.errors.get(text, 0) + count
        clients_kib = sum(reply["VmRSS"] for reply in replies)
        result.samples.append(
            Sample(opened, memory["VmRSS"], memory["VmHWM"], seconds, clients_kib)
        )
        log(
            f"{opened:>6} sockets  server RSS {memory['VmRSS'] / 1024:7.1f} MiB"
            f"  peak {memory['VmHWM'] / 1024:7.1f} MiB  step {seconds:5.1f} s"
        )


async def check_fanout(
    clients: list[Client], http: httpx.AsyncClient, chat_id: str, chats: int, result: Result
) -> None:
    """Live subscribers: every socket of the first chat must see its answer end."""
    reports = await ask_all(clients, [{"report": True}] * len(clients))
    result.closed_while_idle = sum(report["closed"] for report in reports)
    result.fanout_expected = len(range(0, result.samples[-1].sockets, chats))
    response = await http.post(f"/api/chats/{chat_id}/messages", json={"content": "hello"})
    response.raise_for_status()
    with trio.move_on_after(FANOUT_S):
        while True:
            reports = await ask_all(clients, [{"report": True}] * len(clients))
            result.fanout_done = sum(report["done"].get(chat_id, 0) for report in reports)
            if result.fanout_done >= result.fanout_expected:
                return
            await trio.sleep(0.2)


async def stop_clients(clients: list[Client]) -> None:
    """End of input ends a client; one that hangs is killed."""
    started = time.perf_counter()
    for client in clients:
        await client.lines.close()
    with trio.move_on_after(CLIENT_STOP_S):
        for client in clients:
            await client.process.wait()
    for client in clients:
        if client.process.returncode is None:
            client.process.kill()
            await client.process.wait()
    log(f"clients stopped in {time.perf_counter() - started:.1f} s")


async def stop_server(server: AutoBotServer) -> None:
    """SIGTERM, as a service manager would; SIGKILL if it takes too long."""
    started = time.perf_counter()
    try:
        status = await server.stop(SERVER_STOP_S)
    except trio.TooSlowError:
        status = await server.kill()
    log(f"server stopped in {time.perf_counter() - started:.1f} s, exit status {status}")


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# -- tracemalloc -----------------------------------------------------------------------------

_PREFIXES = sorted(
    {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], str(ROOT)},
    key=len,
    reverse=True,
)
_STDLIB = sysconfig.get_paths()["stdlib"]
_UNOWNED = ("trio/", "outcome/", "sniffio/", "<")  # "<attrs generated ...>", "<frozen ...>"
SCHEDULER = "trio (scheduler)"


def short(filename: str) -> str:
    for prefix in _PREFIXES:
        if filename.startswith(prefix + "/"):
            return filename[len(prefix) + 1 :]
    return filename


def unowned(filename: str) -> bool:
    in_stdlib = filename.startswith(_STDLIB + "/") and "site-packages" not in filename
    return in_stdlib or short(filename).startswith(_UNOWNED)


def owner_frame(traceback: tracemalloc.Traceback) -> tracemalloc.Frame | None:
    """The innermost frame outside the standard library and Trio: who asked for it.

    Only frames inside the Trio run count (the ones outside it are the
    process's start-up, common to everything); None when no frame there is
    ours or a library's: the scheduler's own bookkeeping.
    """
    frames = list(traceback)  # the oldest frame first, the allocating one last
    runner = next((i for i, f in enumerate(frames) if short(f.filename).startswith("trio/")), -1)
    for frame in reversed(frames[runner + 1 :]):
        if not unowned(frame.filename):
            return frame
    return None


def package(frame: tracemalloc.Frame | None) -> str:
    if frame is None:
        return SCHEDULER
    if frame.filename.startswith(_STDLIB + "/") and "site-packages" not in frame.filename:
        return "stdlib"
    name = short(frame.filename)
    if name.startswith("<attrs generated"):
        return "trio (attrs classes)"
    return name.split("/", 1)[0].removesuffix(".py")


def source(frame: tracemalloc.Frame) -> str:
    return linecache.getline(frame.filename, frame.lineno).strip()[:70]


def analyse(before: str, after: str, sockets: int) -> dict[str, Any]:
    """The snapshot diff per socket: top allocating lines, top owning frames, packages."""
    noise = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, linecache.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    ]
    old = tracemalloc.Snapshot.load(before).filter_traces(noise)
    new = tracemalloc.Snapshot.load(after).filter_traces(noise)

    def row(frame: tracemalloc.Frame, size: int, count: int) -> dict[str, Any]:
        return {
            "site": f"{short(frame.filename)}:{frame.lineno}",
            "bytes_per_socket": size / sockets,
            "blocks_per_socket": count / sockets,
            "source": source(frame),
        }

    by_line = new.compare_to(old, "lineno")
    lines = [
        row(diff.traceback[-1], diff.size_diff, diff.count_diff) for diff in by_line[:TOP_SITES]
    ]
    owners: dict[tuple[str, int], list[int]] = {}
    packages: dict[str, int] = {}
    for diff in new.compare_to(old, "traceback"):
        frame = owner_frame(diff.traceback)
        key = (SCHEDULER, 0) if frame is None else (frame.filename, frame.lineno)
        totals = owners.setdefault(key, [0, 0])
        totals[0] += diff.size_diff
        totals[1] += diff.count_diff
        packages[package(frame)] = packages.get(package(frame), 0) + diff.size_diff
    ranked = sorted(owners.items(), key=lambda item: item[1][0], reverse=True)
    owner_rows = [row(tracemalloc.Frame(place), size, count) for place, (size, count) in ranked]
    return {
        "traced_bytes_per_socket": sum(diff.size_diff for diff in by_line) / sockets,
        "traced_blocks_per_socket": sum(diff.count_diff for diff in by_line) / sockets,
        "by_line": lines,
        "by_owner": owner_rows[:TOP_SITES],
        "ours": [
            entry
            for entry in owner_rows
            if entry["site"].startswith("autobot/") and abs(entry["bytes_per_socket"]) >= 8
        ],
        "by_package": {
            name: size / sockets
            for name, size in sorted(packages.items(), key=lambda item: item[1], reverse=True)
        },
    }


# -- report ----------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def report(result: Result, analysis: dict[str, Any] | None) -> None:
    first, last = result.samples[0], result.samples[-1]
    per_socket = (last.rss_kib - first.rss_kib) * 1024 / max(1, last.sockets)
    print(
        f"\n### Idle chat WebSockets: {result.backend} store, {result.chats} chats,"
        f" {result.clients} client process(es){', under tracemalloc' if result.tracemalloc else ''}"
    )
    print("\n| sockets | server RSS | server peak (VmHWM) | step open s | clients' RSS |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for sample in result.samples:
        print(
            f"| {sample.sockets} | {mib(sample.rss_kib)} | {mib(sample.hwm_kib)} |"
            f" {sample.open_s:.1f} | {mib(sample.client_rss_kib)} |"
        )
    under = last.rss_kib * 1024 < GIB and result.peak_kib * 1024 < GIB
    print("\n| N | RSS before | RSS after | bytes/socket (slope) | bytes/socket (end − start) |"
          " peak | under 1 GiB |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print(
        f"| {last.sockets} | {mib(first.rss_kib)} | {mib(last.rss_kib)} |"
        f" {result.slope_bytes:,.0f} | {per_socket:,.0f} | {mib(result.peak_kib)} |"
        f" {'yes' if under else 'NO'} |"
    )
    print(
        f"\nhandshakes refused: {result.refused} (retried up to {HANDSHAKE_TRIES} times);"
        f" sockets that never opened: {result.failed};"
        f" closed while idle: {result.closed_while_idle};"
        f" RSS after holding: {mib(result.held_rss_kib)};"
        f" answer in chat 1 reached {result.fanout_done} of {result.fanout_expected} sockets"
    )
    for text, count in result.errors.items():
        print(f"- {count} × {text}")
    if analysis is None:
        return
    print(
        f"\n### tracemalloc diff over {last.sockets} sockets:"
        f" {analysis['traced_bytes_per_socket']:,.0f} traced bytes in"
        f" {analysis['traced_blocks_per_socket']:.0f} blocks per socket"
    )
    for title, key in (
        (f"Top {TOP_SITES} by allocating line", "by_line"),
        (f"Top {TOP_SITES} by owner (innermost frame outside the stdlib and Trio)", "by_owner"),
        ("AutoBot's own owners", "ours"),
    ):
        print(f"\n#### {title}\n")
        print("| bytes/socket | blocks/socket | site | source |")
        print("| ---: | ---: | --- | --- |")
        for entry in analysis[key]:
            text = entry["source"].replace("|", "\\|")
            print(
                f"| {entry['bytes_per_socket']:,.0f} | {entry['blocks_per_socket']:.2f} |"
                f" {entry['site']} | `{text}` |"
            )
    print("\n#### By owning package\n")
    print("| package | bytes/socket |")
    print("| --- | ---: |")
    for name, size in analysis["by_package"].items():
        if abs(size) >= 1:
            print(f"| {name} | {size:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--step", type=int, default=1_000, help="sockets between RSS samples")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes at a time")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds idle before the check")
    parser.add_argument("--redis", action="store_true", help="a private redis-server, not embedded")
    parser.add_argument("--tracemalloc", action="store_true", help="snapshot diff of the server")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    parser.add_argument(
        "--keep-snapshots", type=Path, metavar="DIR", help="write the snapshots here, and keep them"
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_files_limit()
    if args.client:
        trio.run(client_main)
        return
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit < args.sockets // args.clients + 500 or limit < args.sockets + 500:
        parser.error(f"RLIMIT_NOFILE hard limit {limit} is too low for {args.sockets} sockets")
    with tempfile.TemporaryDirectory(prefix="ws-memory-") as work:
        redis = RedisProcesses(Path(work) / "redis")
        try:
            redis_url = redis.redis().url if args.redis else None
            result = trio.run(run, args, redis_url, Path(work))
        finally:
            redis.stop_all()
        analysis = None
        if args.tracemalloc:
            analysis = analyse(*result.snapshots, result.samples[-1].sockets)
    report(result, analysis)
    if args.out:
        data = asdict(result) | {"slope_bytes": result.slope_bytes, "peak_kib": result.peak_kib}
        if analysis is not None:
            data["tracemalloc"] = analysis
        args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
