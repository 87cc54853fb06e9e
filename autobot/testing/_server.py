"""The real server as a process of its own: for tests of signals, crashes and restarts.

:func:`run_autobot_server` starts ``python -m autobot serve`` (what ``run.py``
and the ``autobot`` command run) on a free port with the settings it is given,
reports the running :class:`AutoBotServer` through ``nursery.start()`` once the
server logged that it listens, and reads its JSON log all the time (a server
whose log pipe nobody reads blocks on its next line once the pipe is full).
A test can then send it SIGTERM and see it stop cleanly, SIGKILL it in the
middle of an operation and start another on the same data directory, or read
its access log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from .._config import Settings
from .._deadlines import SCOPES

__all__ = ["AutoBotServer", "run_autobot_server", "settings_environ"]

_SPECS = {spec.name: spec for spec in SCOPES}
_SETTINGS_FIELDS = {name for name in Settings.__dataclass_fields__}
_STARTUP_S = 15.0
_STOP_S = 15.0


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(item) for item in value)
    return str(value)


def settings_environ(**values: Any) -> dict[str, str]:
    """The ``AUTOBOT_*`` variables that give a server process these settings.

    ``values`` are fields of :class:`~autobot.Settings` by name, as for
    ``autobot_app``; ``deadlines={"llm.idle": 0.5}`` becomes
    ``AUTOBOT_DEADLINE_LLM_IDLE``; ``None`` leaves a setting unset.
    ``operation_profiles`` have no variables: write them in a TOML file and
    pass ``config=<path>`` (``AUTOBOT_CONFIG``). An unknown name or deadline
    scope raises ``TypeError``.
    """
    environ: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name == "config":
            environ["AUTOBOT_CONFIG"] = str(value)
        elif name == "deadlines":
            for scope, seconds in dict(value).items():
                if scope not in _SPECS:
                    raise TypeError(f"no deadline scope named {scope!r}")
                environ[_SPECS[scope].env_var] = repr(float(seconds))
        elif name == "operation_profiles":
            raise TypeError("operation_profiles: write a TOML file and pass config=<path>")
        elif name in _SETTINGS_FIELDS:
            environ["AUTOBOT_" + name.upper()] = _env_value(value)
        else:
            raise TypeError(f"not a setting: {name}")
    return environ


class AutoBotServer:
    """A running server process and the JSON log lines it wrote to stderr so far.

    Handed out by :func:`run_autobot_server` (or the ``autobot_server``
    fixture) once it listens on :attr:`url`.
    """

    def __init__(self, process: trio.Process, environ: Mapping[str, str] | None = None) -> None:
        self.process = process
        self.environ = dict(environ or {})
        self.log: list[dict[str, Any]] = []
        """Every JSON line of the log, in order (``{"msg": "listening", ...}``, requests...)."""
        self.other_lines: list[str] = []
        """Lines that are not JSON (the configuration summary, a traceback)."""
        self.url = ""
        self._new_line = trio.Event()
        self._ended = False

    @property
    def data_dir(self) -> Path:
        """Where the server keeps its data: give it to the next server to restart on it."""
        return Path(self.environ.get("AUTOBOT_DATA_DIR", "data"))

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended (negative: the signal that ended it)."""
        return self.process.returncode

    async def pump(self) -> None:
        """Read stderr into :attr:`log` and :attr:`other_lines` until the process closes it."""
        assert self.process.stderr is not None
        buffer = b""
        try:
            while chunk := await self.process.stderr.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._add(line.decode(errors="replace"))
                self._new_line.set()
                self._new_line = trio.Event()
        finally:
            if buffer:
                self._add(buffer.decode(errors="replace"))
            self._ended = True
            self._new_line.set()

    def _add(self, text: str) -> None:
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            self.other_lines.append(text)
            return
        if isinstance(entry, dict):
            self.log.append(entry)
        else:
            self.other_lines.append(text)

    async def read_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Wait for a JSON log line that satisfies ``predicate``; return it.

        Looks at the lines already read too. Raises ``EOFError`` (with the last
        lines that were not JSON) if the process closed its log first. Has no
        limit of its own: wrap it in ``trio.fail_after``.
        """
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

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process (nothing if it has ended)."""
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self, timeout_s: float = _STOP_S) -> int:
        """SIGTERM, as a service manager stops it; its exit status once it exited.

        The server cancels its streams and WebSockets (storing the partial
        answers), lets other requests finish within ``server.shutdown`` and
        closes its services, so a clean stop is status 0. Raises
        ``trio.TooSlowError`` if it is still running after ``timeout_s``.
        """
        self.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout_s):
            await self.process.wait()
            await self.drain()
        assert self.process.returncode is not None
        return self.process.returncode

    async def kill(self) -> int:
        """SIGKILL: a crash, or a power cut. Nothing is closed or saved; returns ``-9``."""
        self.send_signal(signal.SIGKILL)
        with trio.fail_after(_STOP_S):
            await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode


async def run_autobot_server(  # noqa: ASYNC114 - the caller's nursery starts it
    environ: Mapping[str, str],
    *,
    argv: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    startup_s: float = _STARTUP_S,
    task_status: trio.TaskStatus[AutoBotServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a server process; ``await nursery.start(run_autobot_server, environ)`` is it, listening.

    ``environ`` are ``AUTOBOT_*`` variables (see :func:`settings_environ`); the
    process gets this process's environment without any ``AUTOBOT_*`` variable
    of its own, ``AUTOBOT_PORT=0`` (a free port) unless ``environ`` names one,
    then ``environ``. ``argv`` defaults to ``python -m autobot serve``.

    Returns when the process has exited and its log is read to the end. When
    cancelled it kills the process (SIGKILL) if it still runs, shielded, so
    that nothing outlives the nursery: stop it with :meth:`AutoBotServer.stop`
    first for a clean stop. A server that does not listen within
    ``startup_s`` raises ``trio.TooSlowError``; one that exits first,
    ``EOFError`` with the end of its output.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("AUTOBOT_")}
    env |= {"AUTOBOT_PORT": "0", "PYTHONUNBUFFERED": "1", **environ}
    command = list(argv or [sys.executable, "-m", "autobot", "serve"])
    process = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE, cwd=cwd)
    server = AutoBotServer(process, env)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.pump)
            with trio.fail_after(startup_s):
                listening = await server.read_until(lambda entry: entry.get("msg") == "listening")
            server.url = str(listening["binds"][0])
            task_status.started(server)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(_STOP_S):
                await process.wait()
