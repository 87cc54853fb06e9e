"""The request class: bodies read under ``http.body``, JSON parsed strictly.

Two rules a browser's cross-site request cannot satisfy and a real client
always does:

* a JSON route reads a body only when it says ``Content-Type: application/json``
  (or a ``+json`` type); anything else is 415 ``unsupported_media_type``. A page
  on another site can POST ``text/plain`` or a form without a preflight, but
  not ``application/json``, so this keeps other sites from driving the API.
* the body is strict JSON (see :mod:`._json_body`): not UTF-8, not JSON, or
  nested too deeply is a 400 in the contract's shape.

An empty body reads as an empty object, so ``POST /api/chats`` with nothing
to say still creates a chat.

Receiving the body is bounded by the named scope ``http.body``; when it expires
the answer is 408 ``request_timeout`` naming that scope.

Most routes get their body whole, read before the handler runs. A route
marked :func:`streamed_body` (an upload) reads it itself, piece by piece as
it arrives, with :meth:`AutoBotRequest.receive_pieces`. Quart's own receiver
would buffer the whole body meanwhile, however fast the client sends, so the
app uses :class:`AutoBotHTTPConnection`: its receiver stops taking messages
from Hypercorn while :data:`BODY_BUFFER_BYTES` are waiting for the handler,
Hypercorn's queue fills and it stops reading the socket, and TCP flow
control slows the client down. A body read whole lifts that bound (the upload
limit still holds).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

import trio
from hypercorn.typing import ASGIReceiveCallable
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest
from quart_trio.wrappers.request import TrioBody
from werkzeug.exceptions import RequestEntityTooLarge

from .._deadlines import deadline
from .._errors import DeadlineExceeded, RequestTimeout, UnsupportedMediaType, echo
from ._json_body import parse_json

__all__ = [
    "BODY_BUFFER_BYTES",
    "BODY_BUFFER_PIECES",
    "AutoBotBody",
    "AutoBotHTTPConnection",
    "AutoBotRequest",
    "is_streamed_body",
    "streamed_body",
]

#: Body bytes received and not yet taken by a handler that reads piece by piece.
BODY_BUFFER_BYTES = 1 << 20
#: Pieces of body held at most likewise (a chunked body can come a byte at a time).
BODY_BUFFER_PIECES = 1024

F = TypeVar("F", bound=Callable[..., Any])

_STREAMED_MARK = "_autobot_streamed_body"


def streamed_body(handler: F) -> F:
    """Let ``handler`` read its body itself, as it arrives, outside ``http.request``.

    The app does not read the body first, and the handler is not bounded by
    ``http.request`` (a large upload takes longer): it bounds its own reading
    with ``http.body_idle`` (each silence) and each write with ``file.io``.
    """
    setattr(handler, _STREAMED_MARK, True)
    return handler


def is_streamed_body(handler: Callable[..., Any] | None) -> bool:
    return bool(getattr(handler, _STREAMED_MARK, False))


class AutoBotBody(TrioBody):
    """Quart-Trio's request body, holding at most :data:`BODY_BUFFER_BYTES` for a piecewise reader.

    Until a reader awaits the whole body, what arrives is kept as the pieces
    Hypercorn handed over (no copy into one buffer), and the receiver waits
    (in :meth:`wait_for_room`) whenever that much, or that many pieces, is held.
    """

    def __init__(self, expected_content_length: int | None, max_content_length: int | None):
        super().__init__(expected_content_length, max_content_length)
        self._whole = False
        self._pieces: list[bytes] = []
        self._held = 0
        self._wanted = 1  # bytes held before the reader is woken
        self._room = trio.Event()
        self._room.set()

    def append(self, data: bytes) -> None:
        if self._whole:
            super().append(data)
            return
        if not data or self._must_raise is not None:
            return
        self._pieces.append(data)
        self._held += len(data)
        if self._max_content_length is not None and self._held > self._max_content_length:
            self._must_raise = RequestEntityTooLarge()
            self.set_complete()
        full = self._held >= BODY_BUFFER_BYTES or len(self._pieces) >= BODY_BUFFER_PIECES
        if full or self._held >= self._wanted:
            self._has_data.set()
        if full and self._room.is_set():
            self._room = trio.Event()

    @property
    def has_room(self) -> bool:
        """Whether the receiver may take another message now."""
        return self._room.is_set()

    async def wait_for_room(self) -> None:
        """Return once the receiver may take another message."""
        await self._room.wait()

    def _read_whole(self) -> None:
        if self._whole:
            return
        self._whole = True
        pieces, self._pieces, self._held = self._pieces, [], 0
        for piece in pieces:
            super().append(piece)
        self._room.set()

    def __await__(self) -> Generator[Any, None, Any]:
        self._read_whole()
        return super().__await__()

    async def __anext__(self) -> bytes:
        if self._whole:
            return await super().__anext__()
        pieces = await self.next_pieces()
        if not pieces:
            raise StopAsyncIteration
        return b"".join(pieces)

    async def next_pieces(self, at_least: int = 1) -> list[bytes]:
        """The pieces that arrived since the last call; ``[]`` at the end.

        Waits until ``at_least`` bytes are held (at most :data:`BODY_BUFFER_BYTES`),
        the body ended, or the buffer is full: a reader that writes in large
        steps is woken once per step, not once per piece.
        """
        if self._must_raise is not None:
            raise self._must_raise
        self._wanted = max(1, min(at_least, BODY_BUFFER_BYTES))
        full = self._held >= BODY_BUFFER_BYTES or len(self._pieces) >= BODY_BUFFER_PIECES
        if not self._complete.is_set() and self._held < self._wanted and not full:
            self._has_data.clear()
            await self._has_data.wait()
        if self._must_raise is not None:
            raise self._must_raise
        pieces, self._pieces, self._held = self._pieces, [], 0
        self._has_data.clear()
        self._room.set()
        return pieces


class AutoBotHTTPConnection(TrioASGIHTTPConnection):
    """Quart-Trio's HTTP connection, with a receiver that pushes back (see the module docstring)."""

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Any, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        while True:
            if isinstance(body, AutoBotBody) and not body.has_room:
                await body.wait_for_room()
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


class AutoBotRequest(TrioRequest):
    """A Quart-Trio request with AutoBot's body rules (see the module docstring)."""

    body_class = AutoBotBody

    async def get_data(
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> Any:
        try:
            with deadline("http.body"):
                return await super().get_data(cache, as_text, parse_form_data)
        except DeadlineExceeded as error:
            if error.scope != "http.body":
                raise
            raise RequestTimeout(error.scope, error.deadline_s) from None

    @property
    def has_body(self) -> bool:
        """Whether the client announced a body (a length above zero, or chunks)."""
        if "Transfer-Encoding" in self.headers:
            return True
        return (self.content_length or 0) > 0

    async def receive_body(self) -> None:
        """Read the whole body now (under ``http.body``), for the handler to use later."""
        await self.get_data(cache=True)

    async def receive_pieces(self, at_least: int = 1) -> list[bytes]:
        """The next pieces of a :func:`streamed_body` route's body (``[]`` at the end).

        See :meth:`AutoBotBody.next_pieces`. Bounded by the caller
        (``http.body_idle``, per call). Raises werkzeug's ``RequestEntityTooLarge`` once
        Quart's limit is passed.
        """
        body = self.body
        assert isinstance(body, AutoBotBody)
        return await body.next_pieces(at_least)

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        data: bytes = await self.get_data(cache=cache)
        if not data:
            result: Any = {}
        elif not _is_json(self.mimetype):
            shown = echo(self.mimetype) if self.mimetype else "no Content-Type"
            raise UnsupportedMediaType(
                f"this route reads JSON: send 'Content-Type: application/json' (got {shown})"
            )
        else:
            result = parse_json(data)
        if cache:
            self._cached_json[silent] = result
        return result
