"""What the Ollama and OpenAI providers share: one pooled client, phases, breaker, errors.

Every request to a provider runs the same way (see :meth:`HTTPProvider._exchange`):

1. through the provider's circuit breaker, which fails it at once while open;
2. in one :func:`phased_deadline` block that starts in ``llm.connect`` (pool
   wait, TCP and TLS connect) and switches, through httpcore's ``trace``
   extension, to the request's next phase the moment the request starts
   going out on a connection: ``llm.first_token`` for a chat, ``llm.models``
   for the model list. The first token is awaited inside that same block.
3. with httpx's own timeouts disabled: the deadlines are cancel scopes, so an
   expiry closes the connection it interrupted and names the phase.

Transport failures before the first token are :class:`LLMUnavailable`; an
HTTP error status is :class:`LLMError` with the provider's own message.

Embeddings (:meth:`HTTPProvider.embed`) go the same way, with ``kb.embed`` as
the request phase: same client, same API key, same breaker, so a provider
that is down is down for chat and embeddings alike.
"""

from __future__ import annotations

import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, Self, TypeVar, cast

import httpx

from .._breaker import CircuitBreaker
from .._deadlines import DeadlinePhase, deadline, phased_deadline
from .._errors import DeadlineExceeded, LLMError, LLMTimeout, LLMUnavailable
from ._events import ChatStreamParser
from ._failures import is_outage, llm_timeouts
from ._interface import Message
from ._lines import excerpt
from ._ndjson import error_message
from ._pool import StreamingTransport
from ._stream import TextStream

__all__ = ["HTTPProvider", "checked_messages", "checked_texts"]

_T = TypeVar("_T")

_ROLES = ("system", "user", "assistant")
# An error body is a sentence or a small JSON object; more is not worth reading.
_MAX_ERROR_BODY = 64 * 1024


def _trace_phases(phase: DeadlinePhase, request_phase: str) -> Callable[..., Awaitable[None]]:
    """An httpcore ``trace`` hook that ends the connect phase when the request goes out.

    For a new connection this follows the TCP (and TLS) connect; for a pooled
    one it is the first event of all, so the connect phase then covers only
    the wait for the pool.
    """

    async def trace(event: str, info: Mapping[str, Any]) -> None:
        if event.endswith("send_request_headers.started") and phase.name == "llm.connect":
            phase.switch(request_phase)

    return trace


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _error_text(body: bytes) -> str:
    """The provider's own error message from an error response body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        item = json.loads(text)
    except ValueError:
        return excerpt(text, 200) if text else ""
    if isinstance(item, dict):
        for key in ("error", "detail", "message"):
            if item.get(key) is not None:
                return error_message(item[key])
    return excerpt(text, 200)


@contextmanager
def _request_timeouts(request_phase: str) -> Iterator[None]:
    """Re-raise an expiry of a request phase outside ``llm.*`` (``kb.embed``) as
    :class:`LLMTimeout`, so the breaker counts a provider that stalls as out."""
    try:
        yield
    except LLMTimeout:
        raise
    except DeadlineExceeded as error:
        if error.scope != request_phase:
            raise
        raise LLMTimeout(error.scope, error.deadline_s) from None


def checked_texts(texts: Sequence[str]) -> list[str]:
    """The texts to embed as a list; ``ValueError`` if one is not a string."""
    checked = list(texts)
    for text in checked:
        if not isinstance(text, str):
            raise ValueError(f"only text can be embedded, not {text!r}")
    return checked


def checked_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The messages as the JSON the providers expect; ``ValueError`` for a malformed one."""
    checked = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES or not isinstance(content, str):
            raise ValueError(
                f"a chat message needs a role in {_ROLES} and text content, not {message!r}"
            )
        checked.append({"role": role, "content": content})
    if not checked:
        raise ValueError("a chat needs at least one message")
    return checked


class HTTPProvider:
    """Base of the providers: a chat API over one shared, pooled ``httpx.AsyncClient``.

    Use as an async context manager, which closes the client and its
    connections on exit. ``max_connections`` bounds the connections (one per
    answer streaming at once); it is high on purpose, since waiting for a free
    connection counts against ``llm.connect`` and the provider queues requests
    better than we would. At most ``max_keepalive_connections`` idle
    connections are kept. The pool is :class:`StreamingTransport`'s, whose
    cost per request does not grow with the answers streaming at once. The
    circuit breaker opens after ``failure_threshold`` outages in a row (see
    :func:`is_outage`) and probes again after ``cooldown_s``.
    """

    kind: ClassVar[str]
    chat_path: ClassVar[str]
    models_path: ClassVar[str]
    embed_path: ClassVar[str]

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_connections: int = 1000,
        max_keepalive_connections: int = 10,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url + "/",
            headers=headers,
            timeout=httpx.Timeout(None),
            transport=StreamingTransport(
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_keepalive_connections,
                )
            ),
        )
        self.breaker = CircuitBreaker(
            f"llm {self.kind} {self.url}",
            open_error=self._circuit_open,
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
        )

    @property
    def label(self) -> str:
        """How errors name this provider: ``ollama at http://127.0.0.1:11434``."""
        return f"{self.kind} at {self.url}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} model={self.model!r}>"

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    # -- the interface shared with FallbackChain ---------------------------------

    async def complete(self, messages: Sequence[Message], model: str | None = None) -> str:
        """The whole answer to ``messages``, from one non-streaming request.

        ``model`` defaults to the provider's model. The provider sends nothing
        until it has generated everything, so ``llm.first_token`` bounds the
        whole generation here; use :meth:`stream` for long answers. Raises
        :class:`LLMUnavailable`, :class:`LLMError` or :class:`LLMTimeout`.
        """
        body = self.chat_body(checked_messages(messages), model or self.model, stream=False)
        with llm_timeouts(), deadline("llm.total"):
            answer = await self._exchange(
                "POST", self.chat_path, body, "llm.first_token", self._read_json
            )
        return self.answer_text(answer)

    @asynccontextmanager
    async def stream(
        self, messages: Sequence[Message], model: str | None = None
    ) -> AsyncIterator[TextStream]:
        """Stream the answer to ``messages``: ``async with`` it, then iterate the deltas.

        ::

            async with provider.stream(messages) as answer:
                async for delta in answer:
                    send(delta)
            # answer.text is the whole answer; answer.stats what the provider said of it

        Entering sends the request and waits for the first token (phases
        ``llm.connect`` then ``llm.first_token``), so an error raised by the
        ``async with`` means nothing was streamed: :class:`LLMUnavailable`
        (cannot connect, connection dropped, circuit open), :class:`LLMError`
        (an HTTP error status or an error before any text) or
        :class:`LLMTimeout`. Errors raised while iterating carry ``partial``
        (see :class:`TextStream`), and ``llm.total``, which bounds the whole
        block, raises :class:`LLMStreamTimeout` with the text so far.

        Leaving the block, normally, by an exception or by cancellation,
        closes the response; a response not read to its end closes its
        connection at once, so the provider sees the client gone and stops
        generating.
        """
        body = self.chat_body(checked_messages(messages), model or self.model, stream=True)
        answer: TextStream | None = None

        def partial() -> str | None:
            return answer.text if answer is not None else None

        with llm_timeouts(partial), deadline("llm.total"):
            answer = await self._exchange(
                "POST", self.chat_path, body, "llm.first_token", self._start_stream
            )
            try:
                async with answer.reading():
                    yield answer
            finally:
                await answer.aclose()

    async def list_models(self) -> list[str]:
        """The names of the models the provider serves (phases ``llm.connect``, ``llm.models``)."""
        listing = await self._exchange("GET", self.models_path, None, "llm.models", self._read_json)
        try:
            return self.model_names(listing)
        except (KeyError, TypeError, ValueError):
            raise LLMError(
                f"{self.label} sent a model list in an unknown shape: {excerpt(str(listing))}"
            ) from None

    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]:
        """One embedding per text, in order, from one request to the embeddings endpoint.

        ``model`` is the embedding model (rarely the chat model). The request
        goes through this provider's circuit breaker, connects within
        ``llm.connect`` and is answered within ``kb.embed``; callers batch (a
        few dozen texts per call). Raises :class:`LLMUnavailable` (cannot
        connect, circuit open), :class:`LLMError` (an error status, or an
        answer that is not one list of numbers per text) or
        :class:`LLMTimeout` (``llm.connect`` or ``kb.embed``; both count as an
        outage). No texts: no request. Safe to cancel: the connection of an
        unfinished request is closed.
        """
        inputs = checked_texts(texts)
        if not inputs:
            return []
        body = self.embed_body(inputs, model)
        answer = await self._exchange("POST", self.embed_path, body, "kb.embed", self._read_json)
        try:
            vectors = self.embedding_vectors(answer)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise LLMError(
                f"{self.label} sent embeddings in an unknown shape: {excerpt(str(answer))}"
            ) from None
        if len(vectors) != len(inputs):
            raise LLMError(f"{self.label} sent {len(vectors)} embeddings for {len(inputs)} texts")
        for vector in vectors:
            if not (
                isinstance(vector, list)
                and vector
                and all(
                    isinstance(value, float | int) and not isinstance(value, bool)
                    for value in vector
                )
            ):
                raise LLMError(
                    f"{self.label} sent an embedding that is not a list of numbers: "
                    f"{excerpt(str(vector))}"
                )
        return vectors

    async def health(self) -> dict[str, Any]:
        """List the models; report this provider and the state of its circuit breaker."""
        models = await self.list_models()
        return {
            "provider": self.kind,
            "url": self.url,
            "model": self.model,
            "breaker": self.breaker.state.value,
            "models": len(models),
        }

    def breaker_snapshots(self) -> list[dict[str, Any]]:
        """This provider's circuit breaker state and counters (a list, like a chain's)."""
        return [{"provider": self.kind, "url": self.url, **self.breaker.snapshot()}]

    # -- what each provider defines ----------------------------------------------

    def chat_body(self, messages: list[dict[str, str]], model: str, *, stream: bool) -> Any:
        raise NotImplementedError

    def parser(self) -> ChatStreamParser:
        raise NotImplementedError

    def answer_text(self, answer: Any) -> str:
        raise NotImplementedError

    def model_names(self, listing: Any) -> list[str]:
        raise NotImplementedError

    def embed_body(self, texts: list[str], model: str) -> Any:
        raise NotImplementedError

    def embedding_vectors(self, answer: Any) -> list[list[float]]:
        """The vectors of an embeddings answer, in input order (may raise on a bad shape)."""
        raise NotImplementedError

    # -- the request machinery ----------------------------------------------------

    def _circuit_open(self, remaining_s: float) -> LLMUnavailable:
        return LLMUnavailable(
            f"{self.label} keeps failing; not trying again for {remaining_s:.1f} s (circuit open)"
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        body: Any,
        request_phase: str,
        handle: Callable[[httpx.Response], Awaitable[_T]],
    ) -> _T:
        """Send one request and hand the response to ``handle``, all in one phased deadline.

        ``handle`` runs in the ``request_phase`` (it reads the first token, or
        the body); the response is closed if it raises or is cancelled, and
        otherwise left to whatever ``handle`` returned.
        """
        with self.breaker.attempt(is_outage), _request_timeouts(request_phase), llm_timeouts():
            with phased_deadline("llm.connect") as phase:
                request = self._client.build_request(
                    method,
                    path,
                    json=body,
                    extensions={"trace": _trace_phases(phase, request_phase)},
                )
                try:
                    response = await self._client.send(request, stream=True)
                    try:
                        if response.is_error:
                            raise await self._status_error(response)
                        return await handle(response)
                    except BaseException:
                        await response.aclose()  # cancellation-safe: httpcore shields it
                        raise
                except httpx.TransportError as error:
                    raise LLMUnavailable(f"cannot reach {self.label}: {_describe(error)}") from None
                except httpx.HTTPError as error:
                    raise LLMError(f"{self.label} sent an unreadable answer: {error}") from None

    async def _status_error(self, response: httpx.Response) -> LLMError:
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        message = _error_text(bytes(body)) or response.reason_phrase
        return LLMError(
            f"{self.label} answered HTTP {response.status_code}: {message}",
            upstream_status=response.status_code,
        )

    async def _start_stream(self, response: httpx.Response) -> TextStream:
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())

        async def close() -> None:
            try:
                await chunks.aclose()
            finally:
                await response.aclose()  # closes the connection unless the body was read whole

        answer = TextStream(
            self.parser(),
            chunks,
            source=self.label,
            close=close,
            on_outage=self.breaker.record_failure,
        )
        try:
            await answer.wait_first_token()
        except BaseException:
            await answer.aclose()
            raise
        return answer

    async def _read_json(self, response: httpx.Response) -> Any:
        body = await response.aread()
        try:
            return json.loads(body)
        except ValueError:
            raise LLMError(
                f"{self.label} sent a body that is not JSON: "
                f"{excerpt(body.decode('utf-8', 'replace'))}"
            ) from None
