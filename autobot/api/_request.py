"""The request class: JSON bodies parsed whatever the content type, errors in our shape."""

from __future__ import annotations

from typing import Any, NoReturn

from quart_trio.wrappers import TrioRequest

from .._errors import BadRequest

__all__ = ["AutoBotRequest"]


class AutoBotRequest(TrioRequest):
    """A request whose body is read as JSON even without ``Content-Type: application/json``.

    Clients such as ``curl -d`` send JSON as form data by default; reading it as
    JSON anyway gives them the same answer, and a body that is not JSON the
    contract's ``invalid_json`` error instead of a bare 400 page.
    """

    async def get_json(self, force: bool = True, silent: bool = False, cache: bool = True) -> Any:
        return await super().get_json(force=force, silent=silent, cache=cache)

    def on_json_loading_failed(self, error: Exception) -> NoReturn:
        raise BadRequest("the request body is not valid JSON", code="invalid_json")
