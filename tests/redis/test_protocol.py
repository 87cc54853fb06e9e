"""The sans-I/O RESP core, fed bytes: no server, no sockets."""

from __future__ import annotations

import pytest
from redis._parsers.encoders import Encoder
from redis.exceptions import DataError, InvalidResponse, NoScriptError, ResponseError

from autobot.redis._protocol import NOT_ENOUGH_DATA, ReplyParser, decode_tree, pack_command

UTF8 = Encoder("utf-8", "strict", False)


def test_pack_matches_the_resp_spelling() -> None:
    assert pack_command(("SET", "k", b"v"), UTF8) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    # Multi-word names are split, as redis-py's packer does.
    assert pack_command(("CONFIG GET", "port"), UTF8).startswith(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET")


def test_pack_encodes_numbers_like_redis_py() -> None:
    packed = pack_command(("SET", "k", 0.1 + 0.2), UTF8)
    assert repr(0.1 + 0.2).encode() in packed
    assert b"$2\r\n42\r\n" in pack_command(("SET", "k", 42), UTF8)
    assert "é".encode() in pack_command(("SET", "k", "é"), UTF8)


def test_pack_uses_the_client_encoding() -> None:
    latin1 = Encoder("latin-1", "strict", False)
    assert b"$1\r\n\xe9\r\n" in pack_command(("SET", "k", "é"), latin1, utf8=False)


@pytest.mark.parametrize("value", [True, None, object()])
def test_pack_refuses_what_redis_py_refuses(value: object) -> None:
    with pytest.raises(DataError):
        pack_command(("SET", "k", value), UTF8)


def test_replies_complete_only_when_all_bytes_arrived() -> None:
    parser = ReplyParser()
    stream = b"*2\r\n$5\r\nhello\r\n:7\r\n+OK\r\n"
    for byte in stream[:-6]:
        parser.feed(bytes([byte]))
        assert parser.next_reply() is NOT_ENOUGH_DATA
    parser.feed(stream[-6:])
    assert parser.next_reply() == [b"hello", 7]
    assert parser.next_reply() == b"OK"
    assert parser.next_reply() is NOT_ENOUGH_DATA


def test_error_replies_are_returned_as_redis_py_exceptions() -> None:
    parser = ReplyParser()
    parser.feed(b"-WRONGTYPE Operation against a key\r\n-NOSCRIPT No matching script\r\n")
    wrongtype = parser.next_reply()
    assert isinstance(wrongtype, ResponseError) and "WRONGTYPE" in str(wrongtype)
    assert isinstance(parser.next_reply(), NoScriptError)


def test_errors_inside_arrays_stay_in_place() -> None:
    parser = ReplyParser()
    parser.feed(b"*2\r\n+OK\r\n-ERR boom\r\n")
    ok, error = parser.next_reply()
    assert ok == b"OK" and isinstance(error, ResponseError)


def test_decoding_can_be_switched_off_per_reply() -> None:
    parser = ReplyParser("utf-8")
    parser.feed(b"$2\r\nhi\r\n$2\r\n\xff\xfe\r\n$2\r\nok\r\n")
    assert parser.next_reply() == "hi"
    assert parser.next_reply(decode=False) == b"\xff\xfe"
    assert parser.next_reply() == "ok"


def test_garbage_is_a_protocol_error() -> None:
    parser = ReplyParser()
    parser.feed(b"?what\r\n")
    with pytest.raises(InvalidResponse):
        parser.next_reply()


def test_feed_with_length_uses_a_prefix_of_the_buffer() -> None:
    parser = ReplyParser()
    buffer = bytearray(b":1\r\nleftover-garbage")
    parser.feed(buffer, 4)
    assert parser.next_reply() == 1
    assert not parser.has_data()


def test_decode_tree() -> None:
    encoder = Encoder("utf-8", "strict", True)
    assert decode_tree([b"a", [b"b", 1], None], encoder) == ["a", ["b", 1], None]
