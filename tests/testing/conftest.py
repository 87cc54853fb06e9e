"""The kit's fixtures leave nothing behind: no process, listening port or temporary directory.

Checked around every test here (after all its fixtures are torn down, the
async ones included) and once more when the session ends, from Linux's
``/proc``: the sockets this process listens on, its live children, and the
directories the kit makes (``autobot-testing-<pid>-*``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from autobot.testing._plugin import TMP_PREFIX

PROC = Path("/proc")


def listening_ports() -> set[int]:
    """The TCP ports this process has a listening socket on."""
    inodes = set()
    for fd in (PROC / "self" / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def live_children() -> set[tuple[int, str]]:
    """This process's children that have not exited (pid, command line)."""
    children = set()
    me = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z":
            children.add((int(entry.name), cmdline))
    return children


def kit_directories() -> set[str]:
    return {str(path) for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{os.getpid()}-*")}


@dataclass(frozen=True)
class Snapshot:
    ports: set[int]
    children: set[tuple[int, str]]
    directories: set[str]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(listening_ports(), live_children(), kit_directories())

    def left_since(self, before: Snapshot) -> list[str]:
        left = [f"port {port} still listening" for port in self.ports - before.ports]
        left += [
            f"process {pid} still running: {cmd}" for pid, cmd in self.children - before.children
        ]
        left += [f"directory {path} still there" for path in self.directories - before.directories]
        return left


_SESSION: dict[str, Snapshot] = {}
_LEAKS: list[str] = []


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if its fixtures left a port, a process or a directory."""
    before = Snapshot.take()
    _SESSION.setdefault("start", before)
    yield
    left = Snapshot.take().left_since(before)
    if left:
        _LEAKS.extend(f"{request.node.nodeid}: {what}" for what in left)
        pytest.fail("left behind: " + "; ".join(left), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if "start" not in _SESSION:
        return
    left = Snapshot.take().left_since(_SESSION["start"])
    if left:
        _LEAKS.extend(f"after the session: {what}" for what in left)
    if _LEAKS:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("autobot.testing left things behind:", red=True)
            for leak in _LEAKS:
                reporter.write_line(f"  {leak}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
