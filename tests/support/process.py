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
    """A running ``run.py`` and the JSON log lines it wrote to stderr so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self._buffer = b""
        self.url = ""

    async def read_until(self, predicate: Any) -> dict[str, Any]:
        """Read stderr until a JSON log line satisfies ``predicate``; return that line."""
        assert self.process.stderr is not None
        for entry in self.log:
            if predicate(entry):
                return entry
        while True:
            while b"\n" not in self._buffer:
                chunk = await self.process.stderr.receive_some()
                if not chunk:
                    raise EOFError("the server exited: " + "\n".join(self.other_lines[-5:]))
                self._buffer += chunk
            line, _, self._buffer = self._buffer.partition(b"\n")
            text = line.decode()
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                self.other_lines.append(text)
                continue
            self.log.append(entry)
            if predicate(entry):
                return entry

    async def drain(self) -> None:
        """Read the rest of stderr (after the process exited)."""
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
