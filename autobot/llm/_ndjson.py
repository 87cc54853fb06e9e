"""Ollama's ``/api/chat`` stream: one JSON object per line, the last with ``"done": true``.

::

    {"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}
    {"model":"llama3.2","message":{"role":"assistant","content":"lo"},"done":false}
    {"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,
     "done_reason":"stop","eval_count":2,"total_duration":123456}

An error is an object with an ``"error"`` key, either as the whole response
(with an HTTP error status) or as a line in the middle of the stream.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from ._events import ChatEvent, MalformedStream, StreamDone, StreamError, TextDelta
from ._lines import MAX_LINE_BYTES, LineBuffer, excerpt

__all__ = ["NDJSONChatParser", "error_message"]


def error_message(error: Any) -> str:
    """The human text of an error value as providers send it: a string or an object.

    Ollama sends ``"error": "text"``; OpenAI-compatible servers send
    ``"error": {"message": "text", "type": ...}``; anything else is shown as JSON.
    """
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return json.dumps(error, ensure_ascii=False)


class NDJSONChatParser:
    """Sans-I/O parser for Ollama's streamed chat answer (see :class:`ChatStreamParser`).

    Blank lines are skipped. Lines after the final ``done`` object are ignored.
    A line that is not a JSON object, or whose ``message`` is not an object
    with string ``content``, raises :class:`MalformedStream`; so does the end
    of input before the ``done`` object.
    """

    __slots__ = ("_done", "_lines", "_pending")

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._lines = LineBuffer(max_line_bytes=max_line_bytes)
        self._pending: deque[ChatEvent] = deque()
        self._done = False

    def feed(self, data: bytes) -> None:
        if not self._done:
            self._lines.feed(data)

    def end_of_input(self) -> None:
        self._lines.end_of_input()

    def next_event(self) -> ChatEvent | None:
        while not self._pending:
            if self._done:
                return None
            line = self._lines.next_line()
            if line is None:
                if self._lines.ended:
                    raise MalformedStream("the stream ended without its final 'done' object")
                return None
            if line.strip():
                self._parse(line)
        return self._pending.popleft()

    def _parse(self, line: str) -> None:
        try:
            item = json.loads(line)
        except ValueError:
            raise MalformedStream(f"a line is not JSON: {excerpt(line)}") from None
        if not isinstance(item, dict):
            raise MalformedStream(f"a line is not a JSON object: {excerpt(line)}")
        if "error" in item:
            self._pending.append(StreamError(error_message(item["error"])))
            self._done = True
            return
        message = item.get("message", {})
        content = message.get("content", "") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise MalformedStream(f"a line has no message text: {excerpt(line)}")
        if content:
            self._pending.append(TextDelta(content))
        if item.get("done") is True:
            self._done = True
            stats = {key: value for key, value in item.items() if key != "message"}
            self._pending.append(StreamDone(stats))
