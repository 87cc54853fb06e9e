"""A fake LLM server: real HTTP/1.1 on loopback, speaking the Ollama and OpenAI formats.

Tests start it in their nursery (or take the ``fake_llm`` fixture) and choose
its behaviour with a :class:`Scenario`; it records every request and, for each
streamed answer, whether and when the client closed the connection::

    fake = await nursery.start(serve_fake_llm, Scenario(tokens=["Hel", "lo"]))
    async with OllamaProvider(fake.ollama_url, "llama3.2") as llm: ...
    async with OpenAIProvider(fake.openai_url, "qwen2") as llm: ...

    await fake.set_scenario(Scenario(tokens=50, token_delay=0.01, stall_after=3))
    fake.script(Scenario(status=503), Scenario(tokens=["ok"]))  # the next two answers
    ...
    await fake.streams[-1].client_closed.wait()   # the provider saw the client go
    fake.chat_requests[-1].messages               # what the model was asked

Routes: ``POST /api/chat`` (NDJSON stream, or one JSON object with
``"stream": false``), ``GET /api/tags``, ``POST /v1/chat/completions`` (SSE
with ``"stream": true``, else one JSON object), ``GET /v1/models``, and the
embeddings: ``POST /api/embed`` (Ollama) and ``POST /v1/embeddings`` (OpenAI),
answering :func:`fake_embedding` of each input (the ``embed_*`` scenario
fields make them stall, fail or answer in a wrong shape).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import h11
import trio

__all__ = [
    "FakeLLM",
    "Scenario",
    "SeenRequest",
    "StreamRecord",
    "fake_embedding",
    "serve_fake_llm",
]

Format = Literal["ollama", "openai"]

_MAX_BODY = 10 * 1024 * 1024
_CREATED_AT = "2026-01-01T00:00:00Z"
_WORD = re.compile(r"[a-z0-9]+")
# Each word lands on this many dimensions: few enough that unrelated texts
# share almost none, enough that one collision does not make them alike.
_DIMENSIONS_PER_WORD = 4
_CHAT_PATHS = ("/api/chat", "/v1/chat/completions")
_MALFORMED = {
    "ollama": b'{"model": "fake", "message": {"content": \n',
    "openai": b"data: {oops\n\n",
}


@dataclass(frozen=True)
class Scenario:
    """How the fake answers chat requests (the model lists always answer).

    The ``*_after`` fields count tokens: ``stall_after=3`` sends three tokens,
    then nothing more while keeping the connection open; ``0`` acts before
    the first token. At most one of them is meant to be set.
    """

    tokens: int | Sequence[str] = 5
    """The answer: a list of text pieces, or a count (``t0 ``, ``t1 ``, ...)."""
    first_token_delay: float = 0.0
    """Seconds between the request and the first token (the model "loading")."""
    token_delay: float = 0.0
    """Seconds between two tokens."""
    delay_headers: bool = False
    """Hold the response headers back until the first token (else sent at once)."""
    stall_after: int | None = None
    status: int | None = None
    """Answer chat requests with this HTTP error status and the format's error body."""
    error_message: str = "the fake model failed"
    error_after: int | None = None
    """Send an error object in the stream after this many tokens, then end the body."""
    malformed_after: int | None = None
    """Send a line that is not valid JSON after this many tokens, then end the body."""
    truncate_after: int | None = None
    """End the body properly after this many tokens, but without the terminator."""
    disconnect_after: int | None = None
    """Close the connection after this many tokens (``0``: before any response)."""
    refuse_connections: bool = False
    """Close the listening socket: connecting fails with "connection refused"."""
    models: Sequence[str] = ("llama3.2", "qwen2")
    embed_dimension: int = 256
    """The length of every embedding the fake answers."""
    embed_delay: float = 0.0
    """Seconds before an embeddings request is answered."""
    embed_stall: bool = False
    """Never answer embeddings requests (until the client leaves)."""
    embed_status: int | None = None
    """Answer embeddings requests with this HTTP error status and the format's error body."""
    embed_ragged: bool = False
    """Make the last embedding of each answer one dimension short."""
    embed_missing: bool = False
    """Leave the last embedding out of each answer (one fewer than the inputs)."""

    def token_list(self) -> list[str]:
        if isinstance(self.tokens, int):
            return [f"t{index} " for index in range(self.tokens)]
        return list(self.tokens)

    @property
    def text(self) -> str:
        """The whole answer the scenario streams when nothing goes wrong."""
        return "".join(self.token_list())

    def text_after(self, count: int) -> str:
        """The text of the first ``count`` tokens: the partial answer after a failure."""
        return "".join(self.token_list()[:count])


@dataclass
class SeenRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    connection: int
    """Which accepted connection carried it (1, 2, ...): equal numbers mean a reused connection."""
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def model(self) -> str | None:
        """The ``model`` a chat or embeddings request named (``None`` if none, or no JSON)."""
        try:
            model = self.json().get("model")
        except (ValueError, AttributeError):
            return None
        return model if isinstance(model, str) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat ``messages`` the request sent (``[]`` for other requests)."""
        try:
            messages = self.json().get("messages")
        except (ValueError, AttributeError):
            return []
        return list(messages) if isinstance(messages, list) else []

    @property
    def is_chat(self) -> bool:
        return self.path.split("?")[0] in _CHAT_PATHS


@dataclass
class StreamRecord:
    """One streamed answer, and how it ended."""

    request: SeenRequest
    started_at: float
    tokens_sent: int = 0
    finished: bool = False
    """The fake wrote the whole response (whatever the scenario made it)."""
    client_closed: trio.Event = field(default_factory=trio.Event)
    """Set when the client closed the connection before the response was finished."""
    client_closed_at: float | None = None
    """``trio.current_time()`` when the fake noticed the close."""


class _Disconnect(Exception):
    """Raised by a response writer to drop the connection without finishing."""


class FakeLLM:
    """The server's state: its address, the scenario, and what it has seen.

    Created and started by :func:`serve_fake_llm`, never directly. ``requests`` lists every
    request; ``streams`` every streamed chat answer; ``connections`` counts
    accepted connections.

    A chat request is answered by the next scenario :meth:`script` queued, if
    any, else by :attr:`scenario`; the model lists and the embeddings always
    follow :attr:`scenario`.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_records: bool = True,
        on_stream_end: Callable[[StreamRecord, str], None] | None = None,
    ) -> None:
        self.scenario = scenario or Scenario()
        self.host = host
        self.port = port
        self.keep_records = keep_records
        self.requests: list[SeenRequest] = []
        self.streams: list[StreamRecord] = []
        self.connections = 0
        self._scripted: list[Scenario] = []
        self._on_stream_end = on_stream_end
        self._nursery: trio.Nursery | None = None
        self._serving: trio.CancelScope | None = None
        self._stopped = trio.Event()

    @property
    def ollama_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def url(self, kind: Format) -> str:
        """The base URL for provider ``kind`` (``ollama`` or ``openai``)."""
        return self.ollama_url if kind == "ollama" else self.openai_url

    @property
    def chat_requests(self) -> list[SeenRequest]:
        """The chat requests received, streamed or not, oldest first."""
        return [request for request in self.requests if request.is_chat]

    def script(self, *scenarios: Scenario) -> None:
        """Answer the next ``len(scenarios)`` chat requests by these, one each, in order.

        Queued after any scenarios scripted before and not used yet; once they
        are used up, chat requests follow :attr:`scenario` again. For a test
        of a retry or a fallback: the first answer fails, the second succeeds.
        ``refuse_connections`` has no effect here (use :meth:`set_scenario`).
        """
        self._scripted.extend(scenarios)

    async def set_scenario(self, scenario: Scenario) -> None:
        """Answer the next requests by ``scenario``.

        Switching ``refuse_connections`` on closes the listening socket and
        every open connection before returning; switching it off listens
        again on the same port.
        """
        self.scenario = scenario
        if scenario.refuse_connections and self._serving is not None:
            self._serving.cancel()
            await self._stopped.wait()
            self._serving = None
        elif not scenario.refuse_connections and self._serving is None:
            assert self._nursery is not None
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            await self._nursery.start(self._serve, listeners)

    async def _serve(  # noqa: ASYNC114 - started only from inside this module
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._stopped = stopped = trio.Event()
        try:
            with trio.CancelScope() as self._serving:
                task_status.started()
                await trio.serve_listeners(self._handle_connection, listeners)
        finally:
            for listener in listeners:
                listener.socket.close()
            stopped.set()

    # -- one connection ---------------------------------------------------------

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
        async with stream:
            try:
                while True:
                    request = await self._receive_request(stream, connection, number)
                    if request is None:
                        return
                    await self._respond(stream, connection, request)
                    if connection.our_state is not h11.DONE:
                        return
                    if connection.their_state is not h11.DONE:
                        return
                    connection.start_next_cycle()
            except (
                _Disconnect,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                h11.ProtocolError,
            ):
                return

    async def _receive_request(
        self, stream: trio.SocketStream, connection: h11.Connection, number: int
    ) -> SeenRequest | None:
        start: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                start = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert start is not None
                request = SeenRequest(
                    method=start.method.decode(),
                    path=start.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in start.headers},
                    body=bytes(body),
                    connection=number,
                    at=trio.current_time(),
                )
                if self.keep_records:
                    self.requests.append(request)
                return request
            else:  # ConnectionClosed
                return None

    async def _respond(
        self, stream: trio.SocketStream, connection: h11.Connection, request: SeenRequest
    ) -> None:
        scenario = self.scenario
        route = (request.method, request.path.split("?")[0])
        if route == ("GET", "/api/tags"):
            models = [{"name": m, "model": m, "size": 0} for m in scenario.models]
            await _send_json(stream, connection, 200, {"models": models})
        elif route == ("GET", "/v1/models"):
            models = [{"id": m, "object": "model", "owned_by": "fake"} for m in scenario.models]
            await _send_json(stream, connection, 200, {"object": "list", "data": models})
        elif route in (("POST", "/api/embed"), ("POST", "/v1/embeddings")):
            await self._embed(stream, connection, request, scenario, route[1] == "/api/embed")
        elif route in (("POST", "/api/chat"), ("POST", "/v1/chat/completions")):
            if self._scripted:
                scenario = self._scripted.pop(0)
            fmt: Format = "ollama" if route[1] == "/api/chat" else "openai"
            try:
                options = request.json()
            except ValueError:
                await _send_json(stream, connection, 400, _error_body(fmt, "body is not JSON"))
                return
            streaming = options.get("stream", fmt == "ollama") is True
            model = str(options.get("model", "fake"))
            await self._answer(stream, connection, request, scenario, fmt, model, streaming)
        else:
            await _send_json(stream, connection, 404, {"error": f"no route {route}"})

    async def _embed(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        request: SeenRequest,
        scenario: Scenario,
        ollama: bool,
    ) -> None:
        fmt: Format = "ollama" if ollama else "openai"
        try:
            options = request.json()
            inputs = options["input"]
            if isinstance(inputs, str):
                inputs = [inputs]
            if not all(isinstance(text, str) for text in inputs):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            await _send_json(stream, connection, 400, _error_body(fmt, "input must be strings"))
            return
        if scenario.embed_stall:
            await _wait_for_close(stream)
            raise _Disconnect
        await trio.sleep(scenario.embed_delay)
        if scenario.embed_status is not None:
            await _send_json(
                stream, connection, scenario.embed_status, _error_body(fmt, scenario.error_message)
            )
            return
        vectors = [fake_embedding(text, scenario.embed_dimension) for text in inputs]
        if scenario.embed_missing and vectors:
            vectors.pop()
        if scenario.embed_ragged and vectors:
            vectors[-1] = vectors[-1][:-1]
        model = str(options.get("model", "fake"))
        if ollama:
            answer: dict[str, Any] = {"model": model, "embeddings": vectors}
        else:
            answer = {
                "object": "list",
                "model": model,
                # Listed last first: clients must place each by its index.
                "data": [
                    {"object": "embedding", "index": index, "embedding": vector}
                    for index, vector in reversed(list(enumerate(vectors)))
                ],
            }
        await _send_json(stream, connection, 200, answer)

    async def _answer(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        request: SeenRequest,
        scenario: Scenario,
        fmt: Format,
        model: str,
        streaming: bool,
    ) -> None:
        record = StreamRecord(request, trio.current_time()) if streaming else None
        if record is not None and self.keep_records:
            self.streams.append(record)
        # The writer runs beside a reader that notices at once when the client
        # closes its end, which is what the tests of cancellation measure.
        # (Nothing is raised out of the nursery: it would arrive wrapped in an
        # ExceptionGroup. The outcome is carried out in ``drop`` instead.)
        drop = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_for_close, stream, connection, record, nursery)
            try:
                if record is not None:
                    await self._write_stream(stream, connection, record, scenario, fmt, model)
                    record.finished = True
                    self._stream_ended(record, "finished")
                else:
                    await self._write_whole(stream, connection, scenario, fmt, model)
            except _Disconnect:
                drop = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if record is not None:
                    self._client_closed(record)
                drop = True
            nursery.cancel_scope.cancel()
        if drop or (record is not None and record.client_closed.is_set()):
            raise _Disconnect

    async def _watch_for_close(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        record: StreamRecord | None,
        nursery: trio.Nursery,
    ) -> None:
        try:
            while data := await stream.receive_some(65536):
                connection.receive_data(data)  # the client may already send its next request
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if record is not None:
            self._client_closed(record)
        nursery.cancel_scope.cancel()

    def _client_closed(self, record: StreamRecord) -> None:
        if not record.client_closed.is_set():
            record.client_closed_at = trio.current_time()
            record.client_closed.set()
            self._stream_ended(record, "client_closed")

    def _stream_ended(self, record: StreamRecord, how: str) -> None:
        if self._on_stream_end is not None:
            self._on_stream_end(record, how)

    # -- answers ------------------------------------------------------------------

    async def _write_stream(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        record: StreamRecord,
        scenario: Scenario,
        fmt: Format,
        model: str,
    ) -> None:
        async def send(data: bytes) -> None:
            await _send(stream, connection, h11.Data(data=data))

        async def end() -> None:
            await _send(stream, connection, h11.EndOfMessage())

        if scenario.disconnect_after == 0:
            raise _Disconnect
        if scenario.status is not None:
            await _send_json(
                stream, connection, scenario.status, _error_body(fmt, scenario.error_message)
            )
            return
        content_type = "application/x-ndjson" if fmt == "ollama" else "text/event-stream"
        if scenario.delay_headers:
            await trio.sleep(scenario.first_token_delay)
        await _send(stream, connection, _response_start(200, content_type))
        if fmt == "openai":
            await send(_openai_chunk(model, {"role": "assistant", "content": ""}))
        if not scenario.delay_headers:
            await trio.sleep(scenario.first_token_delay)
        tokens = scenario.token_list()
        for index in range(len(tokens) + 1):
            if scenario.stall_after == index:
                await trio.sleep_forever()
            if scenario.disconnect_after == index:
                raise _Disconnect
            if scenario.error_after == index:
                await send(_error_line(fmt, scenario.error_message))
                await end()
                return
            if scenario.malformed_after == index:
                await send(_MALFORMED[fmt])
                await end()
                return
            if scenario.truncate_after == index:
                await end()
                return
            if index == len(tokens):
                break
            if index > 0 and scenario.token_delay:
                await trio.sleep(scenario.token_delay)
            if fmt == "ollama":
                await send(_ollama_line(model, tokens[index]))
            else:
                await send(_openai_chunk(model, {"content": tokens[index]}))
            record.tokens_sent += 1
        if fmt == "ollama":
            await send(_ollama_line(model, "", done=True, eval_count=len(tokens)))
        else:
            await send(_openai_chunk(model, {}, finish_reason="stop"))
            await send(b"data: [DONE]\n\n")
        await end()

    async def _write_whole(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        scenario: Scenario,
        fmt: Format,
        model: str,
    ) -> None:
        if scenario.disconnect_after is not None:
            raise _Disconnect
        if scenario.status is not None:
            await _send_json(
                stream, connection, scenario.status, _error_body(fmt, scenario.error_message)
            )
            return
        tokens = scenario.token_list()
        await trio.sleep(scenario.first_token_delay + scenario.token_delay * len(tokens))
        if scenario.stall_after is not None:
            await trio.sleep_forever()
        if scenario.malformed_after is not None:
            body = b'{"model": "fake", "message": '
            await _send(stream, connection, _response_start(200, "application/json", len(body)))
            await _send(stream, connection, h11.Data(data=body))
            await _send(stream, connection, h11.EndOfMessage())
            return
        text = "".join(tokens)
        if fmt == "ollama":
            answer: dict[str, Any] = {
                "model": model,
                "created_at": _CREATED_AT,
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": "stop",
                "eval_count": len(tokens),
            }
        else:
            answer = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": len(tokens)},
            }
        await _send_json(stream, connection, 200, answer)


# -- embeddings ---------------------------------------------------------------------


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def fake_embedding(text: str, dimension: int = 256) -> list[float]:
    """A deterministic unit vector for ``text``: texts sharing words are close.

    Each lower-cased word, crudely stemmed (``cats`` and ``cat``, ``parsing``
    and ``parsed`` and ``pars`` are one word), is hashed with SHA-256 onto a
    few dimensions with a sign each; the sum is normalised. Texts with no
    words in common are nearly orthogonal. The same in every process and run
    (``hash()`` is salted per process; SHA-256 is not).
    """
    words = [_stem(word) for word in _WORD.findall(text.lower())] or [text]
    vector = [0.0] * dimension
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        for slot in range(_DIMENSIONS_PER_WORD):
            chunk = digest[4 * slot : 4 * slot + 4]
            index = int.from_bytes(chunk[:3], "big") % dimension
            vector[index] += 1.0 if chunk[3] & 1 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0.0:  # every sign cancelled out: rare, but a vector must have a length
        vector[0], norm = 1.0, 1.0
    return [value / norm for value in vector]


# -- wire helpers -------------------------------------------------------------------


async def _wait_for_close(stream: trio.SocketStream) -> None:
    """Read and drop whatever the client sends until it closes its end."""
    try:
        while await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _send(stream: trio.SocketStream, connection: h11.Connection, event: Any) -> None:
    data = connection.send(event)
    if data:
        await stream.send_all(data)


def _response_start(status: int, content_type: str, length: int | None = None) -> h11.Response:
    headers = [("content-type", content_type), ("server", "fake-llm")]
    if length is not None:
        headers.append(("content-length", str(length)))
    return h11.Response(status_code=status, headers=headers)


async def _send_json(
    stream: trio.SocketStream, connection: h11.Connection, status: int, payload: Any
) -> None:
    body = json.dumps(payload).encode()
    await _send(stream, connection, _response_start(status, "application/json", len(body)))
    await _send(stream, connection, h11.Data(data=body))
    await _send(stream, connection, h11.EndOfMessage())


def _error_body(fmt: Format, message: str) -> dict[str, Any]:
    if fmt == "ollama":
        return {"error": message}
    return {"error": {"message": message, "type": "server_error", "code": None}}


def _error_line(fmt: Format, message: str) -> bytes:
    if fmt == "ollama":
        return json.dumps(_error_body(fmt, message)).encode() + b"\n"
    return b"data: " + json.dumps(_error_body(fmt, message)).encode() + b"\n\n"


def _ollama_line(model: str, content: str, *, done: bool = False, **stats: Any) -> bytes:
    line: dict[str, Any] = {
        "model": model,
        "created_at": _CREATED_AT,
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line.update(done_reason="stop", **stats)
    return json.dumps(line).encode() + b"\n"


def _openai_chunk(model: str, delta: dict[str, Any], *, finish_reason: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


# -- starting it ----------------------------------------------------------------------


async def serve_fake_llm(  # noqa: ASYNC114 - tests start it from their own nursery
    scenario: Scenario | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    keep_records: bool = True,
    on_stream_end: Callable[[StreamRecord, str], None] | None = None,
    task_status: trio.TaskStatus[FakeLLM] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``await nursery.start(serve_fake_llm, scenario)`` returns the
    :class:`FakeLLM` once it listens (on a free port unless ``port`` is given).

    ``keep_records=False`` keeps no requests or stream records (long benchmark
    runs); ``on_stream_end(record, how)`` is called as each streamed answer
    ends, ``how`` being ``"finished"`` or ``"client_closed"``.
    """
    fake = FakeLLM(
        scenario, host=host, port=port, keep_records=keep_records, on_stream_end=on_stream_end
    )
    async with trio.open_nursery() as nursery:
        fake._nursery = nursery
        listeners = await trio.open_tcp_listeners(port, host=host)
        fake.port = listeners[0].socket.getsockname()[1]
        if fake.scenario.refuse_connections:
            for listener in listeners:
                listener.socket.close()
        else:
            await nursery.start(fake._serve, listeners)
        task_status.started(fake)
        await trio.sleep_forever()
