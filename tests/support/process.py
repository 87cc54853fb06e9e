"""Running AutoBot's real entry point as a subprocess and reading its JSON log."""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

ROOT = pathlib.Path(__file__).resolve().parents[2]

__all__ = ["ServerProcess", "run_server"]


class ServerProcess:
    """A running ``run.py`` and the JSON log lines it wrote to stderr so far.

    Its stderr is read all the time, in the background: a server whose log
    pipe nobody reads blocks on its next log line once the pipe is full.
    """

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self.url = ""
        self._new_line = trio.Event()
        self._ended = False

    async def pump(self) -> None:
        """Read stderr into :attr:`log` and :attr:`other_lines` until the process closes it."""
        assert self.process.stderr is not None
        buffer = b""
        try:
            while chunk := await self.process.stderr.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._add(line.decode())
                self._new_line.set()
                self._new_line = trio.Event()
        finally:
            self._ended = True
            self._new_line.set()

    def _add(self, text: str) -> None:
        try:
            self.log.append(json.loads(text))
        except json.JSONDecodeError:
            self.other_lines.append(text)

    async def read_until(self, predicate: Any) -> dict[str, Any]:
        """Wait for a JSON log line that satisfies ``predicate``; return it."""
        seen = 0
        while True:
            for entry in self.log[seen:]:
                if predicate(entry):
                    return entry
            seen = len(self.log)
            if self._ended:
                raise EOFError("the server exited: " + "\n".join(self.other_lines[-5:]))
            await self._new_line.wait()

    async def drain(self) -> None:
        """Wait until the process closed its stderr (after it exited)."""
        try:
            await self.read_until(lambda entry: False)
        except EOFError:
            pass


@asynccontextmanager
async def run_server(environ: Mapping[str, str]) -> AsyncIterator[ServerProcess]:
    """Start ``run.py`` on a free port with ``environ``; yield once it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")}
    env |= {"AUTOBOT_PORT": "0", "PYTHONUNBUFFERED": "1", **environ}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "run.py")], env=env, stderr=-1, cwd=str(ROOT)
    )
    server = ServerProcess(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pump)
        try:
            with trio.fail_after(15):
                listening = await server.read_until(lambda entry: entry.get("msg") == "listening")
            server.url = listening["binds"][0]
            yield server
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await process.wait()
            nursery.cancel_scope.cancel()
