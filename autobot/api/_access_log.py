"""ASGI middleware: one structured log line and one metrics sample per request.

It also shields the final send of each response (see ``send_and_watch``).

It wraps the whole app, so the duration covers streamed bodies and WebSocket
sessions to their end, and a request the client abandoned is still logged
(with ``"cancelled": true``) before the cancellation propagates. The route
template (``/api/chats/<chat_id>``, not the concrete path) labels the metrics;
the app stores it in the ASGI scope under ``ROUTE_KEY`` when a rule matched.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .._logging import log_fields
from .._metrics import Metrics

__all__ = ["ROUTE_KEY", "AccessLog"]

ROUTE_KEY = "autobot.route"
log = logging.getLogger("autobot.access")

_ASGIApp = Any


class AccessLog:
    def __init__(self, app: _ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = trio.current_time()
        status = 0

        async def send_and_watch(message: dict[str, Any]) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "websocket.send" or message.get("more_body"):
                await send(message)  # the hot path: stream data passes straight through
                return
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403  # closed before accepting: the handshake was refused
            elif kind == "websocket.http.response.start":
                status = message["status"]
            elif kind == "http.response.body":
                # Sending the last body chunk lets Hypercorn recycle the connection and
                # start its keep-alive timer, but that same step hands the app an
                # http.disconnect, on which Quart-Trio cancels the request's tasks,
                # this send among them. Cancelled there, the timer never starts: the
                # idle connection would never time out, and would hold up shutdown.
                # Hypercorn shields its socket writes, so shielding adds no new wait.
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        cancelled = False
        try:
            await self.app(scope, receive, send_and_watch)
        except trio.Cancelled:
            cancelled = True
            raise
        finally:
            seconds = trio.current_time() - started
            method = scope.get("method", "WS")
            route = scope.get(ROUTE_KEY, "<unmatched>")
            self.metrics.observe_request(method, route, status, seconds)
            fields = log_fields(
                method=method,
                path=scope["path"],
                status=status,
                duration_ms=round(seconds * 1000, 3),
            )
            if cancelled:
                fields["fields"]["cancelled"] = True
            log.info("request", extra=fields)
