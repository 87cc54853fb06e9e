"""The embedded store's on-disk line format, without any I/O.

Journal and snapshot files are JSON lines, each prefixed with the CRC-32 of its
JSON text::

    3f1a9c0b {"kind":"message","chat_id":"…","id":"…","role":"user",…}\\n

A crash can leave the last line of a journal torn (part of it written). The
checksum and the newline tell a whole line from a torn or garbled one, so
recovery keeps every record up to the first bad line and cuts the file there.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["DecodedLines", "decode_lines", "encode_record", "encode_records"]


def encode_record(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def encode_records(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(encode_record(record) for record in records)


@dataclass(slots=True)
class DecodedLines:
    """What :func:`decode_lines` could read from one buffer."""

    records: list[dict[str, Any]]
    consumed: int  # bytes of whole, valid lines
    bad_line_at: int | None  # offset of the first invalid line, if any (not a torn tail)


def _parse_line(line: bytes) -> dict[str, Any] | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    try:
        expected = int(line[:8], 16)
    except ValueError:
        return None
    body = line[9:]
    if zlib.crc32(body) != expected:
        return None
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def decode_lines(buffer: bytes, offset: int = 0) -> DecodedLines:
    """Decode the whole lines at the start of ``buffer``.

    Stops at the first line that fails its checksum; a trailing piece without a
    newline is left unconsumed (the caller may have more bytes, or it is a torn
    tail). ``offset`` is added to ``bad_line_at`` so callers can report file
    positions.
    """
    records: list[dict[str, Any]] = []
    position = 0
    while True:
        end = buffer.find(b"\n", position)
        if end < 0:
            return DecodedLines(records, position, None)
        record = _parse_line(buffer[position:end])
        if record is None:
            return DecodedLines(records, position, offset + position)
        records.append(record)
        position = end + 1
