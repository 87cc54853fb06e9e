"""Opening the configured LLM: one provider, or a chain when fallbacks are set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from .._llm_fallback import PROVIDER_KINDS, FallbackSpec
from ._chain import FallbackChain
from ._interface import LLM
from ._ollama import OllamaProvider
from ._openai import OpenAIProvider
from ._provider import HTTPProvider

__all__ = ["make_provider", "open_llm"]

_PROVIDERS: dict[str, type[HTTPProvider]] = {"ollama": OllamaProvider, "openai": OpenAIProvider}
assert tuple(_PROVIDERS) == PROVIDER_KINDS


def make_provider(
    provider: str,
    url: str,
    model: str,
    *,
    api_key: str | None = None,
    failure_threshold: int = 5,
    cooldown_s: float = 5.0,
) -> HTTPProvider:
    """A provider of kind ``provider`` (``ollama`` or ``openai``); ``ValueError`` for another."""
    try:
        cls = _PROVIDERS[provider]
    except KeyError:
        raise ValueError(
            f"unknown LLM provider {provider!r}; expected one of {', '.join(_PROVIDERS)}"
        ) from None
    return cls(
        url, model, api_key=api_key, failure_threshold=failure_threshold, cooldown_s=cooldown_s
    )


@asynccontextmanager
async def open_llm(
    provider: str = "ollama",
    url: str = "http://127.0.0.1:11434",
    model: str = "llama3.2",
    *,
    api_key: str | None = None,
    fallback: Sequence[FallbackSpec] = (),
    failure_threshold: int = 5,
    cooldown_s: float = 5.0,
) -> AsyncIterator[LLM]:
    """Open the LLM the settings describe; its connections close when the block ends.

    ::

        async with open_llm("openai", "http://10.0.0.5:8080/v1", "qwen2",
                            fallback=parse_fallback(os.environ["AUTOBOT_LLM_FALLBACK"])) as llm:
            async with llm.stream(messages) as answer:
                async for delta in answer:
                    ...

    Without ``fallback`` the result is the provider itself, with it a
    :class:`FallbackChain` (primary first). ``api_key`` is sent to the primary
    only: a fallback may be another party's server. Each provider gets its own
    circuit breaker with ``failure_threshold`` and ``cooldown_s``.
    """
    primary = make_provider(
        provider,
        url,
        model,
        api_key=api_key,
        failure_threshold=failure_threshold,
        cooldown_s=cooldown_s,
    )
    if not fallback:
        async with primary:
            yield primary
        return
    others = [
        make_provider(
            spec.provider,
            spec.url,
            spec.model,
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
        )
        for spec in fallback
    ]
    async with FallbackChain([primary, *others]) as chain:
        yield chain
