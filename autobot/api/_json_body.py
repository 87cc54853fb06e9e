"""Strict JSON for request bodies and WebSocket messages: one parser, clear 400s.

Whatever a client sends, parsing ends in a value or a :class:`BadRequest` in the
contract's shape, never an exception that becomes a 500:

* bytes that are not UTF-8: ``invalid_json``;
* text that is not JSON, or uses ``NaN``/``Infinity`` (not JSON, and they could
  not be stored back as JSON): ``invalid_json``;
* arrays and objects nested more than :data:`MAX_JSON_DEPTH` levels:
  ``json_too_deep``. Deeper nesting than Python's recursion limit makes the
  decoder raise ``RecursionError``, which is caught; below that, the parsed
  value is measured without recursion. No request of the API needs more than
  a few levels (a fact's metadata is the deepest), so 32 leaves room for any
  reasonable metadata and keeps every later walk over the value shallow.
"""

from __future__ import annotations

import json
from typing import Any

from .._errors import BadRequest

__all__ = ["MAX_JSON_DEPTH", "parse_json"]

MAX_JSON_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON value", code="invalid_json")


def _too_deep() -> BadRequest:
    return BadRequest(
        f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep", code="json_too_deep"
    )


def _check_depth(value: Any) -> None:
    """Raise ``json_too_deep`` when ``value`` nests more than the limit (iteratively)."""
    if not isinstance(value, dict | list):
        return
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        children: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            children.extend(item for item in items if isinstance(item, dict | list))
        level = children


def parse_json(data: bytes | str, what: str = "the request body") -> Any:
    """Decode ``data`` as strict JSON; :class:`BadRequest` says what is wrong with it."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRequest(
                f"{what} is not valid UTF-8 (byte {error.start})", code="invalid_json"
            ) from None
    else:
        text = data
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as error:
        raise BadRequest(f"{what} is not valid JSON: {error}", code="invalid_json") from None
    _check_depth(value)
    return value
