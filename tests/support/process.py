"""Running AutoBot's real entry point (``run.py``) as a subprocess: :mod:`autobot.testing`'s."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import trio

from autobot.testing import AutoBotServer, run_autobot_server

ROOT = pathlib.Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "ServerProcess", "run_server"]

ServerProcess = AutoBotServer


@asynccontextmanager
async def run_server(environ: Mapping[str, str]) -> AsyncIterator[AutoBotServer]:
    """Start ``run.py`` on a free port with ``environ``; yield once it listens.

    On exit a server still running is killed (SIGKILL).
    """
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                run_autobot_server, environ, argv=[sys.executable, str(ROOT / "run.py")], cwd=ROOT
            )
        )
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
