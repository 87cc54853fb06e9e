"""Server-sent events, and the OpenAI chat stream carried in them.

:class:`SSEDecoder` implements the framing of the HTML standard's
``text/event-stream``: ``field: value`` lines, ``data`` lines joined with
``\\n``, comments starting with ``:``, an event dispatched at each blank line,
any of CRLF, LF or CR ending a line. :class:`SSEChatParser` reads the OpenAI
chat-completions stream from those events::

    data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}

    data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}

    data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

    data: [DONE]

Errors come as ``data: {"error": {"message": ...}}`` (vLLM, LiteLLM and the
OpenAI API itself) or as an ``event: error`` (llama.cpp's server).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._events import ChatEvent, MalformedStream, StreamDone, StreamError, TextDelta
from ._lines import MAX_LINE_BYTES, LineBuffer, excerpt
from ._ndjson import error_message

__all__ = ["SSEChatParser", "SSEDecoder", "ServerSentEvent"]

_DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (``message`` unless set), its data and last id."""

    data: str
    event: str = "message"
    id: str = ""


class SSEDecoder:
    """Sans-I/O ``text/event-stream`` decoder: bytes in, :class:`ServerSentEvent` out.

    ``retry`` fields and unknown fields are ignored, as the standard says. An
    event still being assembled when the input ends is dropped (the standard
    again: only a blank line dispatches). :attr:`comments` counts comment lines,
    which servers send as keep-alives.
    """

    __slots__ = ("_data", "_event", "_first_line", "_last_id", "_lines", "comments")

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._lines = LineBuffer(bare_cr=True, max_line_bytes=max_line_bytes)
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._first_line = True
        self.comments = 0

    @property
    def ended(self) -> bool:
        """True once :meth:`end_of_input` was called."""
        return self._lines.ended

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def end_of_input(self) -> None:
        self._lines.end_of_input()

    def next_event(self) -> ServerSentEvent | None:
        """The next complete event, or ``None`` until more bytes (or none after the end)."""
        while (line := self._lines.next_line()) is not None:
            if self._first_line:
                self._first_line = False
                line = line.removeprefix("\ufeff")
            if not line:
                if self._data:
                    event = ServerSentEvent(
                        "\n".join(self._data), self._event or "message", self._last_id
                    )
                    self._data.clear()
                    self._event = ""
                    return event
                self._event = ""
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._last_id = value
        return None


class SSEChatParser:
    """Sans-I/O parser for the OpenAI chat-completions stream (see :class:`ChatStreamParser`).

    Text comes from ``choices[0].delta.content``; ``finish_reason``, ``usage``
    and ``model`` are collected into the :class:`StreamDone` stats. Events after
    ``[DONE]`` are ignored. Data that is not a JSON object, or choices that are
    not shaped like the format, raise :class:`MalformedStream`; so does the end
    of input before ``data: [DONE]``.
    """

    __slots__ = ("_decoder", "_done", "_pending", "_stats")

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes)
        self._pending: deque[ChatEvent] = deque()
        self._stats: dict[str, Any] = {}
        self._done = False

    def feed(self, data: bytes) -> None:
        if not self._done:
            self._decoder.feed(data)

    def end_of_input(self) -> None:
        self._decoder.end_of_input()

    def next_event(self) -> ChatEvent | None:
        while not self._pending:
            if self._done:
                return None
            event = self._decoder.next_event()
            if event is None:
                if self._decoder.ended:
                    raise MalformedStream("the stream ended without 'data: [DONE]'")
                return None
            self._interpret(event)
        return self._pending.popleft()

    def _interpret(self, event: ServerSentEvent) -> None:
        if event.data == _DONE:
            self._done = True
            self._pending.append(StreamDone(dict(self._stats)))
            return
        if event.event == "error":
            self._fail(_error_text(event.data))
            return
        try:
            item = json.loads(event.data)
        except ValueError:
            raise MalformedStream(f"an event's data is not JSON: {excerpt(event.data)}") from None
        if not isinstance(item, dict):
            raise MalformedStream(f"an event's data is not a JSON object: {excerpt(event.data)}")
        if item.get("error") is not None:
            self._fail(error_message(item["error"]))
            return
        for key in ("model", "usage"):
            if item.get(key) is not None:
                self._stats[key] = item[key]
        choices = item.get("choices", [])
        if not isinstance(choices, list):
            raise MalformedStream(f"'choices' is not a list: {excerpt(event.data)}")
        if not choices:
            return  # a usage-only chunk
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise MalformedStream(f"a choice has no 'delta' object: {excerpt(event.data)}")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise MalformedStream(f"a delta's content is not text: {excerpt(event.data)}")
        if content:
            self._pending.append(TextDelta(content))
        if choice.get("finish_reason") is not None:
            self._stats["finish_reason"] = choice["finish_reason"]

    def _fail(self, message: str) -> None:
        self._done = True
        self._pending.append(StreamError(message))


def _error_text(data: str) -> str:
    try:
        item = json.loads(data)
    except ValueError:
        return data
    if isinstance(item, dict) and "error" in item:
        return error_message(item["error"])
    return error_message(item)
