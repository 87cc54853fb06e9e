"""Texts to unit vectors through the LLM provider's embeddings endpoint, in batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .._errors import LLMError

__all__ = ["EMBED_BATCH", "Embedder", "EmbeddingSource"]

#: Texts per embeddings request: big enough to amortise the round trip, small
#: enough that one request stays well inside ``kb.embed`` on a modest server.
EMBED_BATCH = 64


class EmbeddingSource(Protocol):
    """What serves embeddings: an :class:`~autobot.llm.OllamaProvider`, an
    :class:`~autobot.llm.OpenAIProvider` or a :class:`~autobot.llm.FallbackChain`."""

    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]: ...


class Embedder:
    """Embeds texts with ``model`` from ``source``: float32 rows of length 1.

    ::

        embedder = Embedder(services.llm, settings.embed_model)
        vectors = await embedder.embed(["the cat sat", "a dog barked"])  # shape (2, d)

    Texts go in requests of at most ``batch_size``, one after the other, each
    bounded by ``kb.embed`` in the provider (connecting by ``llm.connect``)
    and through the provider's circuit breaker. The answer is checked: one
    vector per text, every vector of one dimension, the same one as every
    earlier answer (a changed dimension means the model changed under the
    index), finite and not zero. A bad answer raises :class:`LLMError`;
    an unreachable or stalling provider :class:`~autobot.LLMUnavailable` or
    :class:`~autobot.LLMTimeout`. Nothing is returned for a call that fails
    part-way: the caller keeps its texts and tries them all again later.
    Safe to cancel.
    """

    def __init__(self, source: EmbeddingSource, model: str, *, batch_size: int = EMBED_BATCH):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.source = source
        self.model = model
        self.batch_size = batch_size
        self.dimension: int | None = None
        """Learnt from the first answer; every later answer must match it."""

    def __repr__(self) -> str:
        return f"<Embedder model={self.model!r} dimension={self.dimension}>"

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One unit vector per text, in order: an array of shape ``(len(texts), dimension)``.

        No texts: an empty ``(0, dimension or 0)`` array and no request.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            vectors = await self.source.embed(batch, self.model)
            parts.append(self._checked(vectors, len(batch)))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def embed_one(self, text: str) -> npt.NDArray[np.float32]:
        """The unit vector of one text (a search query), shape ``(dimension,)``."""
        return (await self.embed([text]))[0]

    def _checked(self, vectors: list[list[float]], count: int) -> npt.NDArray[np.float32]:
        model = f"embedding model {self.model!r}"
        if len(vectors) != count:
            raise LLMError(f"{model} answered {len(vectors)} embeddings for {count} texts")
        lengths = {len(vector) for vector in vectors}
        if len(lengths) != 1:
            raise LLMError(f"{model} answered embeddings of different lengths: {sorted(lengths)}")
        (length,) = lengths
        if length == 0:
            raise LLMError(f"{model} answered empty embeddings")
        if self.dimension is not None and length != self.dimension:
            raise LLMError(
                f"{model} answered embeddings of {length} dimensions, not {self.dimension} "
                "as before: has the model changed?"
            )
        try:
            matrix = np.array(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise LLMError(f"{model} answered embeddings that are not numbers") from None
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not (np.isfinite(norms).all() and (norms > 0).all()):
            raise LLMError(f"{model} answered an embedding that is zero or not finite")
        self.dimension = length
        matrix /= norms
        return matrix
