"""The client commands' connection to a running server: JSON over HTTP, and WebSockets.

Every failure a user can meet here becomes one :class:`ClientError` whose
message is the line to print and whose ``exit_status`` says what kind of
failure it was (see :data:`EXIT_FAILURE`, :data:`EXIT_USAGE`): a server that
cannot be reached, a token it refuses, an error it answered with. The
commands never show a traceback for them.

Each HTTP request waits at most ``http.request``, the budget the server gives
its own handlers, so a server that accepts the connection and then hangs costs
one clear line rather than a terminal that never comes back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import trio
import trio_websocket

from .. import __version__
from .._deadlines import deadline
from .._errors import DeadlineExceeded

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "ClientError",
    "ServerClient",
    "describe_api_error",
    "path_segment",
    "run_async",
]

_T = TypeVar("_T")

#: The command did not succeed: the server is unreachable, refused, or answered an error.
EXIT_FAILURE = 1
#: The command was called wrongly: a bad ``--url``, or a token the server does not accept.
EXIT_USAGE = 2

# The largest WebSocket message a client command accepts (a long answer's snapshot).
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class ClientError(Exception):
    """A failure to report in one line; ``error`` is the server's error object, if any."""

    def __init__(
        self, message: str, exit_status: int = EXIT_FAILURE, error: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status
        self.error = error or {}


def path_segment(value: str) -> str:
    """``value`` quoted as one path segment (an id with a ``/`` cannot change the route)."""
    return quote(value, safe="")


def describe_api_error(error: dict[str, Any]) -> str:
    """``code: message``, plus the deadline scope and budget when one expired."""
    text = f"{error.get('code', 'error')}: {error.get('message', '')}".rstrip(": ")
    if "scope" in error:
        budget = error.get("deadline_s")
        text += f" (deadline {error['scope']}" + (f", {budget:g} s)" if budget else ")")
    return text


def _transport_reason(error: BaseException) -> str:
    reason = str(error) or type(error).__name__
    # httpx passes on the OS's words: "[Errno 111] Connection refused" reads better without.
    if reason.startswith("[Errno") and "] " in reason:
        reason = reason.split("] ", 1)[1]
    return reason.lower() if reason[:1].isupper() and reason[1:2].islower() else reason


def _error_of(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else None


class ServerClient:
    """One server, named by its base URL and optional bearer token.

    Use it as an async context manager: the HTTP connections close with it.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"--url: {url!r} is not an http:// or https:// URL", EXIT_USAGE)
        self.url = url.rstrip("/")
        self.token = token or None
        self._http: httpx.AsyncClient | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"autobot-cli/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def __aenter__(self) -> ServerClient:
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers(), timeout=None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            with trio.CancelScope(shield=True):
                await self._http.aclose()
            self._http = None

    def _unauthorized(self, error: dict[str, Any] | None) -> ClientError:
        how = "the token was refused" if self.token else "it needs an API token"
        detail = f" ({error['message']})" if error and error.get("message") else ""
        return ClientError(
            f"{self.url}: {how}{detail}; pass --token or set AUTOBOT_API_TOKEN",
            EXIT_USAGE,
            error,
        )

    def _unreachable(self, error: BaseException) -> ClientError:
        return ClientError(
            f"cannot reach the AutoBot server at {self.url}: {_transport_reason(error)}"
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; return its JSON body (``None`` for an empty answer).

        Raises :class:`ClientError` for a transport failure, an answer that is
        not JSON, an error status (401 with :data:`EXIT_USAGE`), or no answer
        within ``http.request``.
        """
        assert self._http is not None, "use ServerClient as an async context manager"
        try:
            with deadline("http.request"):
                response = await self._http.request(method, path, json=json_body, params=params)
        except DeadlineExceeded as error:
            raise ClientError(
                f"{self.url} did not answer {method} {path} within "
                f"{error.scope} ({error.deadline_s:g} s)"
            ) from None
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if response.status_code == 401:
            raise self._unauthorized(_error_of(response.content))
        if response.status_code >= 400:
            error_body = _error_of(response.content)
            if error_body is None:
                raise ClientError(
                    f"{self.url} answered {method} {path} with {response.status_code}, "
                    "not an AutoBot error: is it an AutoBot server?"
                )
            raise ClientError(describe_api_error(error_body), error=error_body)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.url} answered {method} {path} with something that is not JSON: "
                "is it an AutoBot server?"
            ) from None

    def websocket_url(self, path: str) -> str:
        scheme = "wss" if self.url.startswith("https:") else "ws"
        return scheme + self.url[self.url.index(":") :] + path

    @asynccontextmanager
    async def websocket(self, path: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A WebSocket to ``path`` on this server, closed when the block ends.

        The handshake is bounded by ``http.request``; a refused one (401, 404,
        403) is a :class:`ClientError` carrying the server's error.
        """
        headers = [
            (name.lower().encode(), value.encode()) for name, value in self._headers().items()
        ]
        url = self.websocket_url(path)
        async with trio.open_nursery() as nursery:
            try:
                with deadline("http.request"):
                    connection = await trio_websocket.connect_websocket_url(
                        nursery, url, extra_headers=headers, max_message_size=_MAX_MESSAGE_BYTES
                    )
            except DeadlineExceeded as error:
                raise ClientError(
                    f"{self.url} did not accept the WebSocket {path} within "
                    f"{error.scope} ({error.deadline_s:g} s)"
                ) from None
            except trio_websocket.ConnectionRejected as rejected:
                error_body = _error_of(rejected.body or b"")
                if rejected.status_code == 401:
                    raise self._unauthorized(error_body) from None
                if error_body is not None:
                    raise ClientError(describe_api_error(error_body), error=error_body) from None
                raise ClientError(
                    f"{self.url} refused the WebSocket {path} ({rejected.status_code})"
                ) from None
            except (OSError, trio_websocket.HandshakeError) as error:
                raise self._unreachable(error) from None
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        with deadline("client.close"):
                            await connection.aclose()
                    except DeadlineExceeded:
                        pass  # a server that hangs on the close handshake is left behind
                nursery.cancel_scope.cancel()


def _only_client_error(group: BaseExceptionGroup) -> ClientError | None:
    matched, rest = group.split(ClientError)
    if matched is None or rest is not None:
        return None
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched if isinstance(matched, ClientError) else None


def run_async(function: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """``trio.run(function, *args)``, with a :class:`ClientError` (or Ctrl-C's
    ``KeyboardInterrupt``) raised out of nurseries raised as itself, not inside an
    exception group, so the command prints its one line."""
    try:
        return trio.run(function, *args)
    except BaseExceptionGroup as group:
        error = _only_client_error(group)
        if error is not None:
            raise error from None
        interrupted, rest = group.split(KeyboardInterrupt)
        if interrupted is not None and rest is None:
            raise KeyboardInterrupt from None
        raise
