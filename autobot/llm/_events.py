"""What a chat stream parser turns bytes into: deltas, the end, or the provider's error.

Both stream formats (Ollama's NDJSON and the OpenAI SSE format) reduce to the
same three events, so everything above the parsers (deadlines, partial text,
fallback) is written once. A stream that breaks its format is not an event but
a :class:`MalformedStream` exception: nothing after it can be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ChatEvent",
    "ChatStreamParser",
    "MalformedStream",
    "StreamDone",
    "StreamError",
    "TextDelta",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer's text; never empty."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The stream's terminator arrived: the answer is complete.

    ``stats`` holds what the provider said about the answer (Ollama's token
    counts and durations, the OpenAI ``finish_reason`` and ``usage``), as sent.
    """

    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamError:
    """The provider reported an error inside the stream (well-formed, but no answer)."""

    message: str


ChatEvent = TextDelta | StreamDone | StreamError


class MalformedStream(ValueError):
    """The bytes do not follow the stream format, or ended before its terminator."""


class ChatStreamParser(Protocol):
    """The sans-I/O interface of both stream parsers, in the style of h11.

    Feed bytes as they arrive in chunks of any size, call
    :meth:`end_of_input` when the body ends, and pull events with
    :meth:`next_event` until it returns ``None`` (it needs more bytes).
    ``next_event`` raises :class:`MalformedStream` at the first line that breaks
    the format, and after :meth:`end_of_input` if the terminator never came;
    the events before that point are all returned first.
    """

    def feed(self, data: bytes) -> None: ...

    def end_of_input(self) -> None: ...

    def next_event(self) -> ChatEvent | None: ...
