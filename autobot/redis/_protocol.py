"""RESP without I/O: commands in, bytes out; bytes in, replies out.

Packing uses ``hiredis.pack_command`` and parsing ``hiredis.Reader``, both in C.
Nothing here touches a socket, so framing, partial replies and error replies
are tested by feeding bytes (``tests/redis/test_protocol.py``).

Arguments are encoded the way redis-py's :class:`~redis._parsers.encoders.Encoder`
does (``int``/``float`` by ``repr``, ``bool`` refused, ``str`` in the client's
encoding), so a command means the same bytes here as in redis-py. Error replies
become redis-py's exception classes (``ResponseError``, ``WrongTypeError``-style
``ResponseError``, ``NoScriptError``, ...) through its own ``parse_error``; they
are returned as values, not raised, because a pipeline or ``EXEC`` reply can
carry several of them and the caller decides which one to raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import hiredis
from redis._parsers.base import BaseParser
from redis._parsers.encoders import Encoder
from redis.exceptions import DataError, InvalidResponse

__all__ = ["NOT_ENOUGH_DATA", "ReplyParser", "decode_tree", "pack_command", "pack_commands"]

#: What :meth:`ReplyParser.next_reply` returns until a whole reply has been fed.
#: A distinct object, because ``None`` and ``False`` are legitimate replies.
NOT_ENOUGH_DATA: Final = object()

# Types hiredis packs exactly as redis-py's Encoder would (for UTF-8 text).
_PASS_THROUGH = frozenset((bytes, str, int))
# "CONFIG GET" → (b"CONFIG", b"GET"): redis-py passes multi-word command names
# as one argument and expects the packer to split them.
_split_names: dict[str, tuple[bytes, ...]] = {}


def _split_name(name: str) -> tuple[bytes, ...]:
    parts = _split_names.get(name)
    if parts is None:
        parts = _split_names[name] = tuple(name.encode().split())
    return parts


def _encode(arg: Any, encoder: Encoder) -> bytes:
    value = encoder.encode(arg)
    return value if type(value) is bytes else bytes(value)


def pack_command(args: Sequence[Any], encoder: Encoder, *, utf8: bool = True) -> bytes:
    """The RESP bytes of one command (``args[0]`` is its name).

    ``utf8`` says that the encoder encodes ``str`` as strict UTF-8, which is
    what hiredis does itself; then plain ``bytes``/``str``/``int`` arguments
    skip the Python-level encoder, which is the common case and the hot path.
    Raises ``redis.exceptions.DataError`` for values redis-py refuses too
    (``bool``, ``None``, arbitrary objects).
    """
    name = args[0]
    if type(name) is str and " " in name:
        args = (*_split_name(name), *args[1:])
    if utf8:
        for arg in args:
            if type(arg) not in _PASS_THROUGH:
                break
        else:
            return hiredis.pack_command(tuple(args))
    try:
        return hiredis.pack_command(tuple(_encode(arg, encoder) for arg in args))
    except TypeError as error:  # pragma: no cover - _encode leaves only bytes
        raise DataError(str(error)) from None


def pack_commands(
    commands: Iterable[Sequence[Any]], encoder: Encoder, *, utf8: bool = True
) -> bytes:
    """Several commands as one write (a pipeline)."""
    return b"".join(pack_command(args, encoder, utf8=utf8) for args in commands)


class ReplyParser:
    """Turns the bytes read from one connection into replies, in order.

    ``encoding`` is the text encoding replies are decoded with (``None``:
    replies stay ``bytes``). :meth:`next_reply` can switch decoding off for
    one reply, for commands such as ``DUMP`` whose replies are binary even on
    a client that decodes.
    """

    __slots__ = ("_decoding", "_encoding", "_errors", "_reader")

    def __init__(self, encoding: str | None = None, errors: str = "strict") -> None:
        self._encoding = encoding
        self._errors = errors
        self._decoding = encoding is not None
        kwargs: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": BaseParser.parse_error,
            "notEnoughData": NOT_ENOUGH_DATA,
        }
        if encoding is not None:
            kwargs["encoding"] = encoding
            kwargs["errors"] = errors
        self._reader = hiredis.Reader(**kwargs)

    def feed(self, data: bytes | bytearray, length: int | None = None) -> None:
        """Add received bytes (the first ``length`` of ``data`` if given)."""
        if length is None:
            self._reader.feed(data)
        else:
            self._reader.feed(data, 0, length)

    def next_reply(self, decode: bool = True) -> Any:
        """The next complete reply, or :data:`NOT_ENOUGH_DATA`.

        Raises ``redis.exceptions.InvalidResponse`` if the bytes are not RESP;
        the connection is then unusable.
        """
        want = decode and self._encoding is not None
        if want is not self._decoding:
            if want:
                self._reader.set_encoding(self._encoding, self._errors)
            else:
                self._reader.set_encoding(None)
            self._decoding = want
        return self._reader.gets()

    def has_data(self) -> bool:
        """Bytes were fed that no reply has consumed yet."""
        return bool(self._reader.has_data())


def decode_tree(value: Any, encoder: Encoder) -> Any:
    """Decode every ``bytes`` in a reply (nested lists too), as a decoding parser would."""
    if isinstance(value, bytes):
        return encoder.decode(value)
    if isinstance(value, list):
        return [decode_tree(item, encoder) for item in value]
    return value
