"""Splitting a byte stream into lines, whatever the chunk boundaries.

Network reads cut a stream anywhere: in the middle of a line, between the
``\\r`` and ``\\n`` of a CRLF, inside a multi-byte UTF-8 character. Lines are
decoded only once complete, so none of those cuts can corrupt one.
"""

from __future__ import annotations

import re

from ._events import MalformedStream

__all__ = ["MAX_LINE_BYTES", "LineBuffer", "excerpt"]

# A streamed chunk is a few hundred bytes; a megabyte without a newline is not
# a stream we can parse, and buffering it further would only cost memory.
MAX_LINE_BYTES = 1 << 20

_LF = re.compile(rb"\n")
_CR_OR_LF = re.compile(rb"\r\n?|\n")


class LineBuffer:
    """Buffers bytes and hands out complete lines, decoded as UTF-8, without terminators.

    With ``bare_cr=False`` (NDJSON) a line ends at ``\\n`` and a ``\\r`` before it
    is dropped; with ``bare_cr=True`` (SSE) ``\\r\\n``, ``\\n`` and a lone ``\\r``
    each end a line. After :meth:`end_of_input`, an unterminated last line is
    returned as a line.
    """

    __slots__ = ("_bare_cr", "_buffer", "_ended", "_max_line_bytes", "_newline", "_skip_lf")

    def __init__(self, *, bare_cr: bool = False, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._bare_cr = bare_cr
        self._newline = _CR_OR_LF if bare_cr else _LF
        self._max_line_bytes = max_line_bytes
        self._ended = False
        self._skip_lf = False

    @property
    def ended(self) -> bool:
        """True once :meth:`end_of_input` was called."""
        return self._ended

    def feed(self, data: bytes) -> None:
        if self._ended:
            raise RuntimeError("feed() after end_of_input()")
        self._buffer += data

    def end_of_input(self) -> None:
        self._ended = True

    def next_line(self) -> str | None:
        """The next complete line, or ``None`` until more bytes (or the end) arrive.

        Raises :class:`MalformedStream` for a line that is not UTF-8 or that
        grows past the length limit without ending.
        """
        buffer = self._buffer
        if self._skip_lf and buffer:
            # The previous line ended at a "\r" that was the last byte then; a
            # "\n" now is the second half of that CRLF, not an empty line.
            self._skip_lf = False
            if buffer[0] == 0x0A:
                del buffer[0]
        match = self._newline.search(buffer)
        if match is None:
            if len(buffer) > self._max_line_bytes:
                raise MalformedStream(f"a line is longer than {self._max_line_bytes} bytes")
            if not (self._ended and buffer):
                return None
            raw = bytes(buffer)
            buffer.clear()
        else:
            start, end = match.span()
            if start > self._max_line_bytes:
                raise MalformedStream(f"a line is longer than {self._max_line_bytes} bytes")
            self._skip_lf = end == len(buffer) and end - start == 1 and buffer[start] == 0x0D
            raw = bytes(buffer[:start])
            del buffer[:end]
        if not self._bare_cr and raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedStream(f"a line is not valid UTF-8 ({error.reason})") from None


def excerpt(text: str, limit: int = 80) -> str:
    """``text`` quoted for an error message, cut after ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")
