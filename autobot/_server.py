"""Serving the app with Hypercorn's Trio worker, and stopping it on a signal.

The first SIGINT or SIGTERM starts a graceful shutdown: streams and WebSockets
are cancelled at once (storing what they had, as a client leaving would),
Hypercorn stops accepting, lets other open requests finish within
``server.shutdown`` and cancels the rest, then the app's lifespan closes its
services. A second signal cancels everything at once.
"""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ._config import Settings
from ._logging import log_fields
from ._services import Services

__all__ = ["serve"]

log = logging.getLogger("autobot.server")


def _hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    # Hypercorn's default of 100 overflows on a burst of connects (a page load, a
    # load test, clients reconnecting after a restart): the kernel drops the SYNs
    # it has no room for, and each of those clients waits out a 1 s retransmit.
    config.backlog = settings.listen_backlog
    config.accesslog = None  # AutoBot logs each request itself, as JSON
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.deadline_table().budget("server.shutdown")
    return config


async def _watch_signals(
    shutdown: trio.Event, everything: trio.CancelScope, services: Services
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.is_set():
                log.info("shutting down", extra=log_fields(signal=name))
                services.begin_shutdown()
                shutdown.set()
            else:
                log.warning("second signal: stopping now", extra=log_fields(signal=name))
                everything.cancel()


async def serve(
    settings: Settings, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve AutoBot until SIGINT or SIGTERM; reports the bound addresses when listening."""
    from .api import create_app  # the API layer sits above this module's callers

    app = create_app(settings)
    config = _hypercorn_config(settings)
    if not settings.site_policy().check_hosts and settings.api_token is None:
        log.warning(
            "any Host is answered and no AUTOBOT_API_TOKEN is set, so a DNS-rebinding page"
            " can use the API: set AUTOBOT_API_TOKEN, or AUTOBOT_ALLOWED_HOSTS to the names"
            " clients use",
            extra=log_fields(host=settings.host),
        )
    shutdown = trio.Event()

    async with trio.open_nursery() as nursery:
        # Hands task_status on to Hypercorn, which reports the bound addresses.
        async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:  # noqa: ASYNC128
            await hypercorn_serve(
                app, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
            nursery.cancel_scope.cancel()  # the signal watcher has nothing left to do

        services = app.extensions["autobot.services"]
        nursery.start_soon(_watch_signals, shutdown, nursery.cancel_scope, services)
        # Hypercorn only logs an error that leaves the app after start-up; a
        # programming error in a supervised service must end the process instead.
        nursery.start_soon(services.raise_on_crash)
        binds = await nursery.start(serve_then_stop)
        log.info("listening", extra=log_fields(binds=binds))
        task_status.started(binds)
    log.info("stopped")


def run(settings: Settings) -> None:
    """Run :func:`serve` in a new Trio event loop (the process's main thread)."""
    trio.run(partial(serve, settings))
