"""A streamed answer: the Trio layer between a chunk source and a stream parser.

:class:`TextStream` takes byte chunks (from an httpx response in production,
from a memory channel in tests), feeds them to a sans-I/O parser and hands the
consumer text deltas. Past the first token it reads in a task of its own, so
that reading the provider and handing text on overlap: whatever arrived while
the consumer was busy (sending the previous delta to a slow client, say) is
handed over in one piece, instead of one step per provider chunk.

It owns the deadline of every wait after the first token: ``llm.idle`` is
restarted for each chunk, so a stream that keeps trickling is never cut and
one that stalls is cut after the budget. The reader measures the provider's
silence only; a consumer that is slow to take the text never counts against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
import trio

from .._deadlines import deadline, phased_deadline
from .._errors import DeadlineExceeded, LLMUnavailable
from .._nursery import background_nursery
from ._events import ChatStreamParser, MalformedStream, StreamDone, StreamError, TextDelta
from ._failures import LLMStreamError, LLMStreamTimeout

__all__ = ["TextStream"]

_Failure = Callable[[], Exception]


class TextStream:
    """The text of one answer, as an async iterator; ``text`` is all of it so far.

    Obtained from ``provider.stream(...)``, which has already waited for the
    first token and started reading the rest: iterating returns the first
    token at once, then each time whatever text arrived since the last step
    (waiting for some when none did). Iteration ends when the stream's
    terminator arrives (Ollama's ``"done": true``, OpenAI's ``[DONE]``), never
    by a timer.

    Raises, each carrying ``partial`` (the same as :attr:`text` at that point),
    only after every piece of text that arrived before the failure was returned:

    * :class:`LLMStreamError` for an error object in the stream, a malformed
      line, or a stream that ended or lost its connection before the terminator;
    * :class:`LLMStreamTimeout` (scope ``llm.idle``) when the provider went
      silent for longer than the budget.

    The stream's owner runs the reader for the rest of the stream in
    ``async with stream.reading():`` and calls :meth:`aclose` after it, also
    when cancelled, so the provider sees its connection closed in the same
    cancellation that ends the consumer.
    ``on_outage`` is called when the provider stalls or drops the connection
    after the first token, so its circuit breaker counts it.
    """

    __slots__ = (
        "_arrived",
        "_chunks",
        "_close",
        "_closed",
        "_failure",
        "_finished",
        "_on_outage",
        "_parser",
        "_parts",
        "_reading",
        "_ready",
        "source",
        "stats",
    )

    def __init__(
        self,
        parser: ChatStreamParser,
        chunks: AsyncIterator[bytes],
        *,
        source: str,
        close: Callable[[], Awaitable[None]] | None = None,
        on_outage: Callable[[], None] | None = None,
    ) -> None:
        self._parser = parser
        self._chunks = chunks
        self._close = close
        self._on_outage = on_outage
        self._parts: list[str] = []  # text returned to the consumer
        self._ready: list[str] = []  # text parsed, not yet returned
        self._failure: _Failure | None = None  # builds the error once the text before it is out
        self._finished = False
        self._reading = False
        self._arrived = trio.Event()
        self._closed = False
        self.source = source
        self.stats: Mapping[str, Any] = {}

    @property
    def text(self) -> str:
        """Every piece of text returned by the iterator so far (after a failure: the partial)."""
        return "".join(self._parts)

    @property
    def finished(self) -> bool:
        """True once the stream's terminator arrived: the answer is complete."""
        return self._finished

    # -- the first token: read by the caller, inside its first-token phase -----------

    async def wait_first_token(self) -> None:
        """Read until the first text arrives, or the stream ends with an empty answer.

        This wait has no deadline of its own: the caller bounds it (the
        providers run it in the ``llm.first_token`` phase of the request). A
        connection lost here raises :class:`LLMUnavailable`, since nothing of
        the answer had arrived. Any failure here is raised at once. Not safe to
        call twice.
        """
        while not (self._ready or self._finished or self._failure):
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._parser.end_of_input()
            except httpx.TransportError as error:
                raise LLMUnavailable(
                    f"{self.source} dropped the connection before answering: {_describe(error)}"
                ) from None
            except httpx.HTTPError as error:
                message = f"{self.source} sent an unreadable body: {_describe(error)}"
                raise self._error(message) from None
            else:
                self._parser.feed(chunk)
            self._collect()
        if not self._ready and self._failure is not None:
            raise self._failure()

    # -- the rest: read by a task of the stream's own ----------------------------------

    async def read_rest(self) -> None:
        """Read and parse the stream to its end, restarting ``llm.idle`` for each chunk.

        :meth:`reading` runs it in a nursery that lives as long as the stream is
        consumed. Failures are kept for the consumer, to be raised after the
        text that preceded them.
        """
        try:
            with phased_deadline("llm.idle") as phase:
                while not (self._finished or self._failure):
                    try:
                        chunk = await anext(self._chunks)
                    except StopAsyncIteration:
                        self._parser.end_of_input()
                    else:
                        phase.switch("llm.idle")
                        self._parser.feed(chunk)
                    self._collect()
                    self._wake()
        except DeadlineExceeded as error:
            self._report_outage()
            scope, budget_s = error.scope, error.deadline_s
            self._fail(lambda: LLMStreamTimeout(scope, budget_s, partial=self.text))
        except httpx.TransportError as error:
            self._report_outage()
            self._fail_with(f"{self.source} dropped the connection mid-answer: {_describe(error)}")
        except httpx.HTTPError as error:
            self._fail_with(f"{self.source} sent an unreadable body: {_describe(error)}")
        finally:
            self._wake()

    def reading(self) -> _Reading:
        """``async with stream.reading():`` runs :meth:`read_rest` for the block."""
        return _Reading(self)

    def _collect(self) -> None:
        """Move what the parser can give from the bytes fed so far into the stream's state."""
        while not (self._finished or self._failure):
            try:
                event = self._parser.next_event()
            except MalformedStream as error:
                self._fail_with(f"{self.source} sent a malformed stream: {error}")
                return
            if event is None:
                return
            if isinstance(event, TextDelta):
                self._ready.append(event.text)
            elif isinstance(event, StreamError):
                self._fail_with(f"{self.source} reported an error: {event.message}")
            else:
                assert isinstance(event, StreamDone)
                self.stats = event.stats
                self._finished = True

    def _wake(self) -> None:
        if self._ready or self._finished or self._failure:
            self._arrived.set()

    def _fail(self, failure: _Failure) -> None:
        self._failure = failure

    def _fail_with(self, message: str) -> None:
        self._failure = lambda: self._error(message)

    # -- the consumer's side ---------------------------------------------------------------

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        while not self._ready:
            if self._failure is not None:
                raise self._failure()
            if self._finished:
                raise StopAsyncIteration
            if not self._reading:
                raise RuntimeError("iterate a TextStream inside its reading() block")
            self._arrived = trio.Event()
            await self._arrived.wait()
        await trio.lowlevel.checkpoint()
        text = "".join(self._ready)
        self._ready.clear()
        self._parts.append(text)
        return text

    async def aclose(self) -> None:
        """Close the source (for an httpx response: its connection, unless fully read).

        Idempotent. Called by the stream's owner on leaving the ``async with``
        block, including when the block was cancelled. An unfinished stream is
        closed at once, without waiting on the network. A finished one first
        reads the rest of its body (normally already received with the
        terminator) so that the connection can be reused; if the provider
        holds the body open, that wait ends after ``llm.idle`` and the
        connection is closed instead, without failing an answer that is whole.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._finished:
                await self._drain()
        finally:
            # Closing is what tells the provider the client is gone, and it
            # mostly runs because the consumer was cancelled: shield it, and
            # bound it in case a TLS goodbye cannot be sent. When the bound
            # expires the connection is closed anyway (Trio's aclose is forceful).
            with trio.CancelScope(shield=True):
                try:
                    with deadline("llm.close"):
                        if self._close is not None:
                            await self._close()
                except DeadlineExceeded:
                    pass

    async def _drain(self) -> None:
        try:
            with deadline("llm.idle"):
                async for _ in self._chunks:
                    pass
        except (DeadlineExceeded, httpx.HTTPError):
            pass

    def _error(self, message: str) -> LLMStreamError:
        return LLMStreamError(message, partial=self.text)

    def _report_outage(self) -> None:
        if self._on_outage is not None:
            self._on_outage()


class _Reading:
    """The block during which a stream's reader runs (see :meth:`TextStream.reading`)."""

    def __init__(self, stream: TextStream) -> None:
        self._stream = stream
        self._manager = background_nursery()

    async def __aenter__(self) -> TextStream:
        nursery = await self._manager.__aenter__()
        self._stream._reading = True
        nursery.start_soon(self._stream.read_rest)
        return self._stream

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._stream._reading = False
        # Waits only for the reader, cancelled by now (it never shields itself).
        return await self._manager.__aexit__(*exc_info)  # noqa: ASYNC102


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
