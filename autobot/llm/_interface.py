"""The one interface callers program against: a provider and a fallback chain both have it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ._stream import TextStream

__all__ = ["LLM", "Message"]

Message = Mapping[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""


class LLM(Protocol):
    """What :func:`open_llm` returns: an :class:`OllamaProvider`, an
    :class:`OpenAIProvider` or a :class:`FallbackChain` of them."""

    @property
    def kind(self) -> str:
        """``ollama`` or ``openai`` (for a chain: its primary's)."""
        ...

    @property
    def url(self) -> str: ...

    @property
    def model(self) -> str:
        """The model used when a call does not name one."""
        ...

    async def complete(self, messages: Sequence[Message], model: str | None = None) -> str: ...

    def stream(
        self, messages: Sequence[Message], model: str | None = None
    ) -> AbstractAsyncContextManager[TextStream]: ...

    async def list_models(self) -> list[str]: ...

    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]:
        """One embedding per text by ``model`` (``kb.embed`` bounds the request)."""
        ...

    async def health(self) -> dict[str, Any]: ...

    def breaker_snapshots(self) -> list[dict[str, Any]]: ...
