"""Running the real ``python -m autobot`` commands: as subprocesses, or in a pseudo-terminal.

``cli(...)`` runs one command to its end without blocking the test's Trio loop
(the fake LLM and the server's log reader go on meanwhile). ``Terminal`` drives
a command through a pty with pexpect; each of its blocking calls runs in a
worker thread for the same reason.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pexpect
import trio

from tests.support.fake_llm import FakeLLM
from tests.support.process import ROOT, ServerProcess, run_server

__all__ = [
    "ANSI",
    "Result",
    "Terminal",
    "assert_one_error_line",
    "clean_env",
    "cli",
    "closed_port",
    "data_dir_with_sources",
    "server_for",
    "terminal",
]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def closed_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any AUTOBOT_* variable, plus ``environ``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")}
    return env | {"PYTHONUNBUFFERED": "1", **(environ or {})}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


async def cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes = b"", timeout_s: float = 30
) -> Result:
    """Run ``python -m autobot ARGS`` to its end; its exit status and output."""
    with trio.fail_after(timeout_s):
        done = await trio.run_process(
            [sys.executable, "-m", "autobot", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env(env),
            cwd=str(ROOT),
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_one_error_line(result: Result, status: int, *fragments: str) -> str:
    """The command failed with ``status`` and a single ``error:`` line, no traceback."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


class Terminal:
    """``python -m autobot ARGS`` in a pseudo-terminal."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child

    @classmethod
    async def spawn(cls, *args: str, env: Mapping[str, str] | None = None) -> Terminal:
        environ = clean_env({"TERM": "dumb", "COLUMNS": "120", "LINES": "40", **(env or {})})
        child = await trio.to_thread.run_sync(
            functools.partial(
                pexpect.spawn,
                sys.executable,
                ["-m", "autobot", *args],
                env=environ,
                cwd=str(ROOT),
                encoding="utf-8",
                codec_errors="replace",
                timeout=10,
                dimensions=(40, 120),
            )
        )
        return cls(child)

    async def expect(self, pattern: Any, timeout_s: float = 10) -> str:
        """Wait for ``pattern`` (a regex, or pexpect.EOF); the text before it."""
        await trio.to_thread.run_sync(functools.partial(self.child.expect, pattern, timeout_s))
        return ANSI.sub("", self.child.before or "")

    async def sendline(self, text: str) -> None:
        await trio.to_thread.run_sync(self.child.sendline, text)

    async def ctrl_c(self) -> None:
        await trio.to_thread.run_sync(self.child.sendintr)

    async def ctrl_d(self) -> None:
        await trio.to_thread.run_sync(self.child.sendeof)

    async def exit_status(self) -> int:
        """Wait for the end of output and the process; its exit status."""
        await self.expect(pexpect.EOF)
        await trio.to_thread.run_sync(self.child.close)
        assert self.child.exitstatus is not None, f"killed by signal {self.child.signalstatus}"
        return self.child.exitstatus

    def kill(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)


@asynccontextmanager
async def terminal(*args: str, env: Mapping[str, str] | None = None) -> AsyncIterator[Terminal]:
    term = await Terminal.spawn(*args, env=env)
    try:
        yield term
    finally:
        term.kill()


def data_dir_with_sources(tmp_path: pathlib.Path) -> pathlib.Path:
    """A data dir whose files root holds ``src/`` with a few Python modules."""
    data = tmp_path / "data"
    source = data / "files" / "src"
    source.mkdir(parents=True)
    for number in range(5):
        (source / f"module{number}.py").write_text(
            f'"""Module {number}."""\n\n\ndef function_{number}(x):\n    return x + {number}\n'
        )
    return data


@asynccontextmanager
async def server_for(
    data: pathlib.Path, fake: FakeLLM | None = None, **environ: str
) -> AsyncIterator[ServerProcess]:
    """``run.py`` on ``data`` and the fake LLM (or an LLM on a closed port)."""
    llm_url = fake.ollama_url if fake is not None else f"http://127.0.0.1:{closed_port()}"
    env = {"AUTOBOT_DATA_DIR": str(data), "AUTOBOT_LLM_URL": llm_url, **environ}
    async with run_server(env) as server:
        try:
            yield server
        except BaseException:
            # Shown with a failure: whether the server was still running, and its last words.
            print(f"server exit status: {server.process.returncode}")
            print("\n".join([str(entry) for entry in server.log[-10:]] + server.other_lines[-10:]))
            raise
