"""``autobot.asgi:app``: AutoBot for the ``hypercorn`` command, one or several workers.

::

    AUTOBOT_REDIS_URL=redis://127.0.0.1:6379/0 \\
        hypercorn --worker-class trio --workers 4 --bind 127.0.0.1:8000 autobot.asgi:app

Each worker process imports this module, which reads the same ``AUTOBOT_*``
variables (and ``AUTOBOT_CONFIG`` file) as ``run.py`` and builds the app.
Hypercorn's own options decide what ``run.py`` takes from the settings: where
to listen (``--bind``; ``AUTOBOT_HOST`` still names the address for the Host
check, so set it to the host you bind), the listen backlog (``--backlog``) and
how long open requests may finish at shutdown (``--graceful-timeout``, best
set to the ``server.shutdown`` budget).

Importing the module is where a worker refuses to start, with the one line
``run.py`` prints and exit status 2 (no traceback): a bad setting, or an
embedded data dir that another process already serves. The embedded store
belongs to one process, so several workers need ``AUTOBOT_REDIS_URL``; the
first worker keeps a lock on the data dir for its whole life, and the second
one names the variable and leaves. Hypercorn then stops the other workers and
exits with that status.

Shutdown: Hypercorn's trio worker tells an app neither that a graceful
shutdown has begun nor how to ask for one, and it leaves SIGTERM at its
default (the master sends it to the remaining workers as soon as one has
exited, which would kill them mid-shutdown). So while serving, the app
handles SIGTERM and SIGINT in its worker, and finds the worker's
``WorkerContext`` (the object Hypercorn's ``--max-requests`` uses to stop a
worker gracefully) among the locals of the task that runs the worker. A
signal asks the worker to stop through it; when the worker starts to stop,
for a signal or because the master asked, streams and WebSockets are
cancelled at once (storing what they had), other requests get the graceful
timeout, and then the lifespan closes the services. A worker that exits this
way exits with status 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from . import __version__
from ._config import ConfigError, load_settings
from ._logging import configure_logging, log_fields
from ._services import Services
from ._serving_claim import Refused, claim_embedded_store

__all__ = ["app"]

log = logging.getLogger("autobot.server")

EXIT_CONFIG_ERROR = 2

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _worker_serve_locals() -> dict[str, Any] | None:
    """The locals of the Hypercorn trio worker (``worker_serve``) running this task, if any.

    Among them ``context``, the worker's ``WorkerContext``, and ``config``;
    ``None`` when the app is served some other way.
    """
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None:
        frame = getattr(task.coro, "cr_frame", None)
        if frame is not None and frame.f_code.co_name == "worker_serve":
            return dict(frame.f_locals)
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None
    return None


def _hypercorn_worker() -> Any | None:
    """The running Hypercorn worker's ``WorkerContext``, with its error log made JSON.

    Hypercorn's error log writes its lines to stderr in its own format; with
    that default, they go through AutoBot's JSON log instead, once.
    """
    found = _worker_serve_locals() or {}
    config = found.get("config")
    if config is not None and hasattr(config, "log"):
        config.log  # noqa: B018 - creates Hypercorn's loggers now, before their first line
        hypercorn_log = logging.getLogger("hypercorn.error")
        streams = [getattr(handler, "stream", None) for handler in hypercorn_log.handlers]
        if streams == [sys.stderr]:
            hypercorn_log.handlers = []
    context = found.get("context")
    if hasattr(context, "terminate") and hasattr(context, "terminated"):
        return context
    return None


class ServedApp:
    """The app as a Hypercorn worker serves it: shutdown on signals, streams cut at once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.services: Services = app.extensions["autobot.services"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        async with trio.open_nursery() as nursery:

            async def send_and_watch(message: dict[str, Any]) -> None:
                if message["type"] == "lifespan.startup.complete":
                    worker = _hypercorn_worker()
                    nursery.start_soon(self._watch_signals, worker)
                    if worker is not None:
                        nursery.start_soon(self._watch_worker, worker)
                elif message["type"] == "lifespan.shutdown.complete":
                    # Hypercorn cancels the lifespan as soon as it hears this.
                    nursery.cancel_scope.cancel()
                    log.info("stopped", extra=log_fields(pid=os.getpid()))
                await send(message)

            await self.app(scope, receive, send_and_watch)
            nursery.cancel_scope.cancel()

    def _begin_shutdown(self, why: str) -> None:
        if not self.services.shutting_down:
            log.info("shutting down", extra=log_fields(signal=why, pid=os.getpid()))
            self.services.begin_shutdown()

    async def _watch_signals(self, worker: Any | None) -> None:
        # Held until the lifespan ends, so that the master's SIGTERM to a worker
        # that is already stopping does not kill it halfway.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self._begin_shutdown(signal.Signals(signum).name)
                if worker is not None:
                    await worker.terminate.set()

    async def _watch_worker(self, worker: Any) -> None:
        await worker.terminated.wait()
        self._begin_shutdown("hypercorn")


def _refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    # SystemExit leaves a Hypercorn worker with this status and no traceback.
    raise SystemExit(EXIT_CONFIG_ERROR)


def build() -> ServedApp:
    """Read the settings, claim an embedded data dir, and build the app; or refuse."""
    from .api import create_app  # the API layer sits above everything imported here

    try:
        settings = load_settings()
    except ConfigError as error:
        _refuse(str(error))
    configure_logging(settings.log_level)
    if not settings.redis_url:
        try:
            claim_embedded_store(settings)
        except Refused as error:
            _refuse(str(error))
    print(f"AutoBot {__version__} (hypercorn worker, pid {os.getpid()})", file=sys.stderr)
    for line in settings.summary():
        if line.startswith("listen"):
            line = "listen      where hypercorn --bind says"
        print(f"  {line}", file=sys.stderr, flush=True)
    if not settings.site_policy().check_hosts and settings.api_token is None:
        log.warning(
            "any Host is answered and no AUTOBOT_API_TOKEN is set, so a DNS-rebinding page"
            " can use the API: set AUTOBOT_API_TOKEN, or AUTOBOT_ALLOWED_HOSTS to the names"
            " clients use",
            extra=log_fields(host=settings.host),
        )
    return ServedApp(create_app(settings))


app = build()
