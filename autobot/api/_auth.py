"""Bearer-token authentication for ``/api/*`` (except ``/api/health``).

When ``AUTOBOT_API_TOKEN`` is set, HTTP requests need ``Authorization: Bearer
<token>``; WebSockets accept the same header or a ``token`` query parameter
(browsers cannot set headers on a WebSocket). Tokens are compared in constant
time. A refused WebSocket handshake answers 401 before it is accepted.
"""

from __future__ import annotations

import hmac

from quart import Quart, request, websocket

from .._errors import Unauthorized

__all__ = ["install_auth"]

_OPEN_PATHS = frozenset({"/api/health"})


def _presented_token(authorization: str | None, query_token: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token


def _check(expected: str, presented: str | None) -> None:
    if presented is None:
        raise Unauthorized("this API needs an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("the bearer token is not valid")


def _protected(path: str) -> bool:
    return path.startswith("/api/") and path not in _OPEN_PATHS


def install_auth(app: Quart, token: str | None) -> None:
    """Require ``token`` on every protected route of ``app``; nothing when ``None``."""
    if token is None:
        return

    @app.before_request
    async def require_token() -> None:
        if _protected(request.path):
            _check(token, _presented_token(request.headers.get("Authorization"), None))

    @app.before_websocket
    async def require_websocket_token() -> None:
        if _protected(websocket.path):
            _check(
                token,
                _presented_token(
                    websocket.headers.get("Authorization"), websocket.args.get("token")
                ),
            )
