"""Checks on a request's headers that run before any route, authentication included.

Three refusals, in this order, on every path (the web page too):

1. **Framing** (HTTP): a request with both ``Content-Length`` and
   ``Transfer-Encoding`` is 400 ``ambiguous_framing`` and its connection is
   closed. h11 reads such a body as chunked and would keep the connection;
   a proxy in front that trusted ``Content-Length`` instead would see a
   different request boundary, which is how requests are smuggled. RFC 9112
   (6.3) lets a server refuse it and requires it to close the connection.
   The body is read (and dropped) before answering: while Hypercorn is still
   parsing it, a request pipelined behind it makes Hypercorn close the socket
   at once, and the 400 would be lost on the way out.
2. **Host** (HTTP and WebSocket): 403 ``host_not_allowed`` against DNS
   rebinding.
3. **Origin** (WebSocket handshakes, and POST/PUT/PATCH/DELETE that carry
   one): 403 ``origin_not_allowed`` against pages on other sites.

Which Hosts and Origins pass is :class:`autobot._site_policy.SitePolicy`'s
business; this module only applies it to Quart's request objects. They run
before the token check, so a page on another site learns nothing, not even
whether a token is needed; and, but for the framing check, before the body is read.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Request, request, websocket
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from .._config import Settings
from .._errors import AutoBotError, BadRequest, Forbidden, echo
from .._site_policy import SitePolicy

__all__ = ["AmbiguousFraming", "install_guards"]

# Methods a page on another site can send without a CORS preflight (a form
# POST) or that change state when it gets one. GET and HEAD answers cannot be
# read across sites without CORS headers, which this server never sends.
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AmbiguousFraming(BadRequest):
    """The request states its body's length twice: ``Content-Length`` and ``Transfer-Encoding``.

    ``headers`` asks for the connection to be closed after the answer (HTTP/1
    only: HTTP/2 forbids a ``Connection`` header, and its framing is never
    ambiguous).
    """

    code = "ambiguous_framing"

    def __init__(self, http_version: str) -> None:
        super().__init__("the request has both Content-Length and Transfer-Encoding; send only one")
        self.headers = {"Connection": "close"} if http_version.startswith("1") else {}


def _local(scope: dict[str, Any]) -> tuple[str, int] | None:
    server = scope.get("server")
    return (str(server[0]), int(server[1])) if server else None


async def _check_framing(incoming: Request) -> None:
    if "Content-Length" in incoming.headers and "Transfer-Encoding" in incoming.headers:
        try:
            await incoming.get_data(cache=False)  # bounded by http.body and the upload limit
        except (AutoBotError, HTTPException):
            pass  # too slow or too big: the answer is the same, the connection closes anyway
        raise AmbiguousFraming(incoming.http_version)


def _check_host(policy: SitePolicy, headers: Headers, scope: dict[str, Any]) -> None:
    host = headers.get("Host")
    if not policy.host_allowed(host, _local(scope)):
        raise Forbidden(
            f"this server does not answer to the host {echo(host)} (see AUTOBOT_ALLOWED_HOSTS)",
            code="host_not_allowed",
        )


def _check_origin(policy: SitePolicy, headers: Headers, scope: dict[str, Any]) -> None:
    origin = headers.get("Origin")
    if origin is not None and not policy.origin_allowed(origin, headers.get("Host"), _local(scope)):
        raise Forbidden(
            f"requests from the origin {echo(origin)} are not allowed"
            " (see AUTOBOT_ALLOWED_ORIGINS)",
            code="origin_not_allowed",
        )


def install_guards(app: Quart, settings: Settings) -> None:
    """Refuse, before any route runs, what :func:`install_auth` must never see.

    Register it before :func:`autobot.api._auth.install_auth`: hooks run in
    the order they were added.
    """
    policy = settings.site_policy()

    @app.before_request
    async def guard_request() -> None:
        await _check_framing(request)
        _check_host(policy, request.headers, request.scope)
        if request.method in _STATE_CHANGING:
            _check_origin(policy, request.headers, request.scope)

    @app.before_websocket
    async def guard_websocket() -> None:
        _check_host(policy, websocket.headers, websocket.scope)
        _check_origin(policy, websocket.headers, websocket.scope)
