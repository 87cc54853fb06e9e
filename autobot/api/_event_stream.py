"""Server-sent events as a response body whose producer lives as long as the response.

A streamed answer is produced by a task (the chat workflow) and sent by Quart
after the handler returned. :class:`EventStream` ties the two together with
structure: Quart enters the body (``async with``) in the task that sends the
response; entering opens a nursery and starts the producer in it; leaving,
whether the stream ended, the client went away (Quart cancels the sending task)
or the server is shutting down, cancels and waits for the producer. So the
producer is cancelled the moment the client goes, in the same cancellation,
and never outlives the response.

Events cross from the producer through a bounded memory channel; events that
queued up while the socket was busy are sent together. When nothing was sent
for 15 seconds the stream sends a ``: keepalive`` comment, so proxies do not
cut a slow model's silence.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import trio
from quart import Response
from quart.wrappers.response import ResponseBody
from quart_trio.wrappers import TrioResponse

__all__ = ["KEEPALIVE_S", "EventStream", "SSEvent", "event_stream_response", "format_event"]

KEEPALIVE_S = 15.0  # the contract's interval for ": keepalive" comments
_BUFFER = 256
_BATCH = 256

#: ``(event name, data)``, or ``(event name, data, event id)``.
SSEvent = tuple[str, Any] | tuple[str, Any, str]
Producer = Callable[[trio.MemorySendChannel[SSEvent]], Awaitable[None]]


def format_event(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One server-sent event: ``event: <name>\\ndata: <json>\\n\\n``, after ``id:`` if given."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {event}\ndata: {payload}\n\n".encode()


class EventStream(ResponseBody):
    """A ``text/event-stream`` body fed by ``producer(send_channel)``.

    The producer sends ``(event name, data)`` pairs, or ``(event name,
    data, event id)``, and returns when the
    stream is complete (closing the channel is done for it).
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._receive: trio.MemoryReceiveChannel[SSEvent] | None = None

    async def __aenter__(self) -> EventStream:
        send, self._receive = trio.open_memory_channel[SSEvent](_BUFFER)
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._produce, send)
        return self

    async def _produce(self, send: trio.MemorySendChannel[SSEvent]) -> None:
        async with send:
            await self._producer(send)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._nursery is not None and self._nursery_manager is not None
        assert self._receive is not None
        # Nobody reads from here on: the producer's sends fail at once instead of
        # blocking (its cleanup runs shielded, and a full buffer would hold it forever).
        self._receive.close()
        self._nursery.cancel_scope.cancel()
        # Waits for the cancelled producer, whose cleanup is shielded and bounded.
        await self._nursery_manager.__aexit__(exc_type, exc_value, traceback)  # noqa: ASYNC102

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        assert self._receive is not None
        with trio.move_on_after(KEEPALIVE_S):
            try:
                events = [await self._receive.receive()]
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            # Whatever else is already waiting leaves in the same write: when the
            # model is faster than the socket, tokens cost one send per batch
            # instead of one each.
            while len(events) < _BATCH:
                try:
                    events.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            return b"".join(format_event(*event) for event in events)
        return b": keepalive\n\n"


def event_stream_response(producer: Producer) -> Response:
    response = TrioResponse(EventStream(producer), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer
    return response
