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
"""

from __future__ import annotations

from typing import Any

from quart_trio.wrappers import TrioRequest

from .._deadlines import deadline
from .._errors import DeadlineExceeded, RequestTimeout, UnsupportedMediaType, echo
from ._json_body import parse_json

__all__ = ["AutoBotRequest"]


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


class AutoBotRequest(TrioRequest):
    """A Quart-Trio request with AutoBot's body rules (see the module docstring)."""

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
