"""Bearer-token authentication for ``/api/*`` (except ``/api/health``).

When ``AUTOBOT_API_TOKEN`` is set, HTTP requests need ``Authorization: Bearer
<token>``; WebSockets accept the same header or a ``token`` query parameter
(browsers cannot set headers on a WebSocket). Tokens are compared in constant
time. A refused WebSocket handshake answers 401 before it is accepted.

A 401 carries the challenge of RFC 6750, ``WWW-Authenticate: Bearer
realm="autobot"`` (with ``error="invalid_token"`` when a token was sent and is
wrong), on WebSocket handshakes too. A request that carries its credentials
more than once (two ``Authorization`` headers, two ``token`` parameters, or a
header and a parameter) is 400 ``duplicate_authorization``: which one counts
would depend on the parser, and a proxy in front may have picked the other.
"""

from __future__ import annotations

import hmac

from quart import Quart, request, websocket

from .._errors import BadRequest, Unauthorized

__all__ = ["install_auth"]

_OPEN_PATHS = frozenset({"/api/health"})
_REALM = 'Bearer realm="autobot"'


class TokenRequired(Unauthorized):
    """401 with its ``WWW-Authenticate`` challenge; ``error`` is RFC 6750's code, if any."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": _REALM + (f', error="{error}"' if error else "")}


class DuplicateAuthorization(BadRequest):
    """The credentials came more than once; RFC 6750 calls this ``invalid_request``."""

    code = "duplicate_authorization"

    def __init__(self) -> None:
        super().__init__(
            "send the token once: one Authorization header, or (WebSocket) one token parameter"
        )
        self.headers = {"WWW-Authenticate": _REALM + ', error="invalid_request"'}


def _presented_token(authorizations: list[str], query_tokens: list[str]) -> str | None:
    if len(authorizations) + len(query_tokens) > 1:
        raise DuplicateAuthorization()
    authorization = authorizations[0] if authorizations else None
    query_token = query_tokens[0] if query_tokens else None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token


def _check(expected: str, presented: str | None) -> None:
    if presented is None:
        raise TokenRequired("this API needs an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise TokenRequired("the bearer token is not valid", error="invalid_token")


def _protected(path: str) -> bool:
    return path.startswith("/api/") and path not in _OPEN_PATHS


def install_auth(app: Quart, token: str | None) -> None:
    """Require ``token`` on every protected route of ``app``; nothing when ``None``."""
    if token is None:
        return

    @app.before_request
    async def require_token() -> None:
        if _protected(request.path):
            _check(token, _presented_token(request.headers.getlist("Authorization"), []))

    @app.before_websocket
    async def require_websocket_token() -> None:
        if _protected(websocket.path):
            _check(
                token,
                _presented_token(
                    websocket.headers.getlist("Authorization"), websocket.args.getlist("token")
                ),
            )
