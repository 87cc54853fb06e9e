"""The redis-py internals the client is built on are where we expect them.

redis-py does not promise these as a public API (hence the ``redis>=8.1,<9``
pin). If an upgrade moves one, this fails with the name of what moved, before
any command test fails in a more puzzling way.
"""

from __future__ import annotations

import inspect

import redis


def test_imported_internals_exist() -> None:
    from redis._parsers.base import BaseParser
    from redis._parsers.encoders import Encoder
    from redis._parsers.helpers import get_response_callbacks
    from redis.client import EMPTY_RESPONSE, NEVER_DECODE, CaseInsensitiveDict
    from redis.commands.core import AsyncCoreCommands

    assert callable(BaseParser.parse_error)
    assert set(inspect.signature(Encoder).parameters) == {
        "encoding",
        "encoding_errors",
        "decode_responses",
    }
    assert list(inspect.signature(get_response_callbacks).parameters) == [
        "user_protocol",
        "legacy_responses",
    ]
    assert isinstance(NEVER_DECODE, str) and isinstance(EMPTY_RESPONSE, str)
    assert CaseInsensitiveDict({"get": 1})["GET"] == 1
    assert hasattr(AsyncCoreCommands, "hset") and hasattr(AsyncCoreCommands, "xadd")


def test_resp2_callbacks_give_the_shapes_we_rely_on() -> None:
    from redis._parsers.helpers import get_response_callbacks

    callbacks = get_response_callbacks(2, True)
    assert callbacks["HGETALL"]([b"a", b"1"]) == {b"a": b"1"}
    assert callbacks["SET"](b"OK") is True
    assert "ZRANGE" in callbacks and "XREAD" in callbacks and "CONFIG GET" in callbacks


def test_parse_error_maps_error_codes() -> None:
    from redis._parsers.base import BaseParser
    from redis.exceptions import NoScriptError, ResponseError

    assert isinstance(BaseParser.parse_error("NOSCRIPT no script"), NoScriptError)
    assert type(BaseParser.parse_error("WRONGTYPE bad")) is ResponseError


def test_the_pinned_major_version() -> None:
    assert redis.__version__.split(".")[0] == "8"
