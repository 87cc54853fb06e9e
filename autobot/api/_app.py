"""The Quart-Trio application factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from quart import request, websocket
from quart_trio import QuartTrio

from .. import __version__
from .._config import Settings, load_settings
from .._deadlines import deadline, install_deadlines
from .._health import HealthCheck
from .._services import Services
from ._access_log import ROUTE_KEY, AccessLog
from ._agents import agents
from ._auth import install_auth
from ._chats import chats
from ._docs_ui import docs_ui
from ._error_handlers import register_error_handlers
from ._files import files
from ._guards import install_guards
from ._knowledge import knowledge
from ._long_running import is_long_running
from ._openapi import install_openapi
from ._operations import operations
from ._page import page
from ._request import AutoBotHTTPConnection, AutoBotRequest, is_streamed_body
from ._system import system

__all__ = ["AutoBotApp", "create_app"]


class AutoBotApp(QuartTrio):
    """Quart-Trio with AutoBot's request class and the ``http.request`` deadline.

    The request body is received first, whole, under its own scope
    ``http.body`` (a client that stalls gets 408 ``request_timeout`` naming it,
    on every route), and only then does the handler run under ``http.request``,
    so a slow client is never blamed on the handler's budget. A streamed
    response body is sent after the handler returned and is bounded by the
    deadlines of what it streams (``llm.idle``, ``llm.total``), not by the
    budget for ordinary requests. Handlers marked :func:`long_running` (a
    non-streamed answer) skip ``http.request`` too. Handlers marked
    :func:`~autobot.api._request.streamed_body` (an upload) read their body
    themselves as it arrives, and bound it themselves.
    """

    request_class = AutoBotRequest
    asgi_http_class = AutoBotHTTPConnection

    async def dispatch_request(self, request_context: Any = None) -> Any:
        incoming = cast(AutoBotRequest, request._get_current_object())  # type: ignore[attr-defined]
        rule = request.url_rule
        handler = self.view_functions.get(rule.endpoint) if rule is not None else None
        if is_streamed_body(handler):
            return await super().dispatch_request(request_context)
        if incoming.has_body:
            await incoming.receive_body()
        if is_long_running(handler):
            return await super().dispatch_request(request_context)
        with deadline("http.request"):
            return await super().dispatch_request(request_context)


def create_app(
    settings: Settings | None = None, *, extra_health_checks: Sequence[HealthCheck] = ()
) -> AutoBotApp:
    """Build the app for ``settings`` (default: from the environment).

    The settings' deadline table becomes the table of the Trio run that serves
    the app when it starts serving (ASGI lifespan), so two apps in one process
    never share budgets or statistics. The services open then too, and close
    when it stops. ``extra_health_checks`` join the built-in ones in ``/api/health``.
    """
    settings = settings or load_settings()
    deadlines = settings.deadline_table()

    app = AutoBotApp("autobot")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        # The body is bounded by the named scope http.body (see AutoBotRequest).
        BODY_TIMEOUT=None,
        # Streamed responses are bounded by the deadlines of what they stream.
        RESPONSE_TIMEOUT=None,
    )
    services = Services(settings, extra_health_checks=extra_health_checks)
    app.extensions["autobot.services"] = services

    install_openapi(app, version=__version__)
    register_error_handlers(app)

    @app.before_request
    async def remember_route() -> None:
        if request.url_rule is not None:
            request.scope[ROUTE_KEY] = request.url_rule.rule

    @app.before_websocket
    async def remember_websocket_route() -> None:
        if websocket.url_rule is not None:
            websocket.scope[ROUTE_KEY] = websocket.url_rule.rule

    install_guards(app, settings)
    install_auth(app, settings.api_token)
    app.register_blueprint(system)
    app.register_blueprint(chats)
    app.register_blueprint(operations)
    app.register_blueprint(files)
    app.register_blueprint(agents)
    app.register_blueprint(knowledge)
    app.register_blueprint(page)
    app.register_blueprint(docs_ui)

    @app.before_serving
    async def open_services() -> None:
        install_deadlines(deadlines)
        await app.nursery.start(services.run)

    @app.after_serving
    async def close_services() -> None:
        services.stop()
        await services.stopped.wait()

    app.asgi_app = AccessLog(app.asgi_app, services.metrics)  # type: ignore[method-assign]
    return app
