"""Running the real ``hypercorn`` command on ``autobot.asgi:app``, and finding its workers.

Which worker holds a connection is read from Linux's ``/proc``: the client's
port names the connection in ``/proc/net/tcp``, whose socket inode appears
among exactly one worker's open files. Nothing in the app needs to say who
it is.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import httpx
import trio

from tests.support.polling import eventually
from tests.support.process import ROOT, ServerProcess
from tests.support.redis_server import free_port

__all__ = ["HypercornProcess", "hypercorn_command", "run_hypercorn", "worker_holding"]

HYPERCORN = pathlib.Path(sys.executable).parent / "hypercorn"


def hypercorn_command(port: int, workers: int, *extra: str) -> list[str]:
    return [
        str(HYPERCORN),
        "--worker-class",
        "trio",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        *extra,
        "autobot.asgi:app",
    ]


class HypercornProcess(ServerProcess):
    """The master process, its stderr (every worker's) and the port it serves."""

    port: int

    def workers(self) -> list[int]:
        """The worker processes' pids (the master's other child is multiprocessing's tracker)."""
        pid = self.process.pid
        children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [
            int(child)
            for child in children
            if b"spawn_main" in pathlib.Path(f"/proc/{child}/cmdline").read_bytes()
        ]

    def lines(self) -> list[str]:
        """Everything the processes wrote to stderr that is not a JSON log line."""
        return list(self.other_lines)


def _environment(environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")}
    return env | {"PYTHONUNBUFFERED": "1", **environ}


@asynccontextmanager
async def start_hypercorn(
    environ: Mapping[str, str], workers: int, extra: Sequence[str] = ()
) -> AsyncIterator[HypercornProcess]:
    """Start ``hypercorn`` on a free port; yield at once (it may refuse to serve)."""
    port = free_port()
    process = await trio.lowlevel.open_process(
        hypercorn_command(port, workers, *extra),
        env=_environment(environ),
        stderr=-1,
        cwd=str(ROOT),
    )
    server = HypercornProcess(process)
    server.port = port
    server.url = f"http://127.0.0.1:{port}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pump)
        try:
            yield server
        finally:
            if process.returncode is None:
                process.kill()
                for pid in _children(process.pid):
                    _kill(pid)
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await process.wait()
            nursery.cancel_scope.cancel()


def _children(pid: int) -> list[int]:
    try:
        return [
            int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


@asynccontextmanager
async def run_hypercorn(
    environ: Mapping[str, str], workers: int, extra: Sequence[str] = ()
) -> AsyncIterator[HypercornProcess]:
    """Start ``hypercorn``; yield once every worker listens and the API answers."""
    async with start_hypercorn(environ, workers, extra) as server:

        def running() -> int:
            return sum(1 for e in server.log if e.get("msg", "").startswith("Running on"))

        async def ready() -> bool:
            if running() < workers:
                if server.process.returncode is not None:
                    raise AssertionError("hypercorn exited: " + "\n".join(server.lines()))
                return False
            try:
                async with httpx.AsyncClient(base_url=server.url) as client:
                    return (await client.get("/api/health")).status_code == 200
            except httpx.TransportError:
                return False

        with trio.fail_after(30):
            await eventually(ready, interval_s=0.05)
        yield server


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the loopback connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if (
                int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
                and inode
            ):
                return inode
    return None


def worker_holding(server: HypercornProcess, client_port: int) -> int | None:
    """The pid of the worker that accepted the connection from ``client_port``."""
    inode = _socket_inode(server.port, client_port)
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in server.workers():
        fd_dir = pathlib.Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == wanted:
                    return pid
            except OSError:
                continue
    return None
