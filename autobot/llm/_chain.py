"""A fallback chain: providers tried in order while the ones before them are out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Self, TypeVar

from .._errors import LLMTimeout, LLMUnavailable
from ._failures import is_outage
from ._interface import Message
from ._provider import HTTPProvider
from ._stream import TextStream

__all__ = ["FallbackChain"]

_T = TypeVar("_T")


class FallbackChain:
    """Several providers behind the interface of one (see :class:`HTTPProvider`).

    Each call goes to the first provider; when that one is *out* before the
    first token (:func:`is_outage`: it cannot be reached, its circuit is open,
    or it did not answer within ``llm.connect``/``llm.first_token``), the call
    goes to the next, and so on. Once a token has been streamed the chain is
    committed to that provider: a later failure is raised as it is, since a
    second provider would answer from the start and the user has half an
    answer already. A provider that *answers* with an error is not out, and
    its error is raised without trying the others.

    A call's ``model`` goes to the first provider only; the others use their
    own model, since another server is unlikely to have a model of that name.
    When every provider is out, :class:`LLMUnavailable` lists why for each.
    Each provider keeps its own circuit breaker, so while the primary's is
    open, calls reach the next provider without waiting on the primary.
    """

    def __init__(self, providers: Sequence[HTTPProvider]) -> None:
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self.providers = tuple(providers)
        self._stack = AsyncExitStack()

    @property
    def kind(self) -> str:
        return self.providers[0].kind

    @property
    def url(self) -> str:
        return self.providers[0].url

    @property
    def model(self) -> str:
        return self.providers[0].model

    def __repr__(self) -> str:
        return f"<FallbackChain {' -> '.join(repr(p) for p in self.providers)}>"

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            for provider in self.providers:
                await stack.enter_async_context(provider)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def complete(self, messages: Sequence[Message], model: str | None = None) -> str:
        """The whole answer from the first provider that is not out."""
        return await self._first_available(
            lambda index, provider: provider.complete(messages, model if index == 0 else None)
        )

    @asynccontextmanager
    async def stream(
        self, messages: Sequence[Message], model: str | None = None
    ) -> AsyncIterator[TextStream]:
        """Stream from the first provider that is not out; see :meth:`HTTPProvider.stream`.

        Entering the block is where the chain moves on: a provider's stream is
        entered only once it has produced its first token (or a complete empty
        answer), so by the time the caller iterates, the provider is chosen.
        """
        failures: list[tuple[HTTPProvider, BaseException]] = []
        async with AsyncExitStack() as stack:
            for index, provider in enumerate(self.providers):
                try:
                    answer = await stack.enter_async_context(
                        provider.stream(messages, model if index == 0 else None)
                    )
                except (LLMUnavailable, LLMTimeout) as error:
                    if not is_outage(error):
                        raise
                    failures.append((provider, error))
                    continue
                yield answer
                return
            raise _all_out(failures)

    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]:
        """Embeddings from the primary provider only; see :meth:`HTTPProvider.embed`.

        No fallback here, on purpose: vectors from two models (or two servers'
        builds of one) live in different spaces, and an index mixing them
        ranks nonsense without any error. A primary that is out fails the
        call; the caller keeps the texts to embed later.
        """
        return await self.providers[0].embed(texts, model)

    async def list_models(self) -> list[str]:
        """The models of the first provider that answers."""
        return await self._first_available(lambda _, provider: provider.list_models())

    async def health(self) -> dict[str, Any]:
        """The first answering provider's health; ``fallback`` says if it is not the primary."""

        async def probe(index: int, provider: HTTPProvider) -> dict[str, Any]:
            return {**await provider.health(), "fallback": index > 0}

        return await self._first_available(probe)

    def breaker_snapshots(self) -> list[dict[str, Any]]:
        """Every provider's circuit breaker, in chain order."""
        return [snapshot for p in self.providers for snapshot in p.breaker_snapshots()]

    async def _first_available(self, call: Callable[[int, HTTPProvider], Awaitable[_T]]) -> _T:
        failures: list[tuple[HTTPProvider, BaseException]] = []
        for index, provider in enumerate(self.providers):
            try:
                return await call(index, provider)
            except (LLMUnavailable, LLMTimeout) as error:
                if not is_outage(error):
                    raise
                failures.append((provider, error))
        raise _all_out(failures)


def _all_out(failures: list[tuple[HTTPProvider, BaseException]]) -> LLMUnavailable:
    reasons = "; ".join(f"{provider.label}: {error}" for provider, error in failures)
    return LLMUnavailable(f"no LLM provider is available ({reasons})")
