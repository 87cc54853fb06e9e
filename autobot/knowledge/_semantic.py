"""Semantic search: this process's vector index of the facts' embeddings, and their embedding.

When ``AUTOBOT_EMBED_MODEL`` is set, every fact gets an embedding from the LLM
provider (:class:`~._embeddings.Embedder`). The embeddings are kept in the
store (``put_fact_vectors``), so each is computed once for all processes, and
each process holds them in a :class:`~._vectors.VectorIndex` for searching.

**Embedding happens in the background.** An add stores the fact and indexes
its words before it returns; its embedding is queued here and computed by
:meth:`SemanticIndex.embed_queued` (the knowledge service runs it) in batches.
So a provider that is slow or down never slows or fails an add: the fact is
keyword-searchable at once and semantically searchable once embedded. An
embedding that fails stays queued and is tried again after a pause that
doubles up to :data:`RETRY_MAX_S`; facts still without one after a restart
are found when the index is built (or by ``kb_optimization``) and queued again.

**Keeping in step** follows the fact log like the keyword index: a ``vectors``
change loads that fact's embedding from the store, a ``delete`` drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import trio

from .._errors import AutoBotError, ServiceUnavailable
from .._health import describe_error
from .._logging import log_fields
from ..storage import Fact, FactChange, Store
from ._cpu import run_cpu
from ._embeddings import EMBED_BATCH, Embedder, EmbeddingSource
from ._vectors import VectorIndex, Vectors

__all__ = ["MAX_QUEUED", "RETRY_MAX_S", "SemanticIndex", "decode_vectors", "encode_vector"]

log = logging.getLogger("autobot.knowledge")

#: Facts waiting for an embedding at most; beyond, the rest wait for a rebuild or kb_optimization.
MAX_QUEUED = 100_000
#: The longest pause before embedding is tried again after a failure.
RETRY_MAX_S = 60.0
_RETRY_FIRST_S = 1.0
# Texts embedded per round of the background embedder (several requests of EMBED_BATCH).
_ROUND = 4 * EMBED_BATCH


def encode_vector(vector: Vectors) -> bytes:
    """A stored embedding: little-endian float32."""
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vectors(stored: dict[str, bytes]) -> tuple[list[str], Vectors]:
    """The ids and rows of stored embeddings; those of another length than most are left out."""
    if not stored:
        return [], np.zeros((0, 0), dtype=np.float32)
    lengths: dict[int, int] = {}
    for value in stored.values():
        lengths[len(value)] = lengths.get(len(value), 0) + 1
    size = max(lengths, key=lambda length: lengths[length])
    ids = [fact_id for fact_id, value in stored.items() if len(value) == size]
    joined = b"".join(stored[fact_id] for fact_id in ids)
    matrix = np.frombuffer(joined, dtype="<f4").reshape(len(ids), size // 4)
    return ids, matrix.astype(np.float32)


class SemanticIndex:
    """The embeddings of one model: stored, indexed here, and computed for new facts.

    ``source`` returns what serves embeddings (the app's LLM, which opens after
    the knowledge base is made). ``mark`` tells the knowledge base which log
    changes this process has already applied, so its log reader skips them.
    """

    def __init__(
        self,
        model: str,
        source: Callable[[], EmbeddingSource],
        mark: Callable[[Iterable[tuple[str, str]]], None],
    ) -> None:
        self.model = model
        self._source = source
        self._mark = mark
        self._embedder: Embedder | None = None
        self.vectors: VectorIndex | None = None
        self._queued: dict[str, str] = {}  # fact id → text, oldest first
        self._queue_changed = trio.Event()
        self.embedded = 0
        self.last_error = ""

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self._source(), self.model)
        return self._embedder

    def status(self) -> dict[str, Any]:
        """For the ``knowledge`` health check."""
        status: dict[str, Any] = {
            "model": self.model,
            "vectors": None if self.vectors is None else len(self.vectors),
            "waiting": len(self._queued),
        }
        if self.last_error:
            status["last_error"] = self.last_error
        return status

    # -- building and following ------------------------------------------------------------

    async def load(self, store: Store, facts: Sequence[Fact]) -> None:
        """Index the stored embeddings; queue the facts that have none."""
        self.vectors = None
        stored = await store.list_fact_vectors(self.model)
        ids, matrix = await run_cpu(decode_vectors, stored)
        vectors = VectorIndex()
        if ids:
            vectors.add(ids, matrix)
        self.vectors = vectors
        self.queue(fact for fact in facts if fact.id not in vectors)

    def unload(self) -> None:
        self.vectors = None

    async def apply(self, store: Store, changes: Sequence[FactChange]) -> None:
        """Apply fact log changes: load new embeddings, drop deleted facts' ones."""
        vectors = self.vectors
        if vectors is None:
            return
        deleted = {change.id for change in changes if change.op == "delete"}
        self.forget(deleted)
        wanted = [c.id for c in changes if c.op == "vectors" and c.id not in deleted]
        if wanted:
            stored = await store.get_fact_vectors(self.model, list(dict.fromkeys(wanted)))
            ids, matrix = decode_vectors(stored)
            if ids and matrix.shape[1] == (vectors.dimension or matrix.shape[1]):
                vectors.add(ids, matrix)

    def forget(self, fact_ids: Iterable[str]) -> None:
        """Deleted facts: out of the index and the queue."""
        fact_ids = list(fact_ids)
        for fact_id in fact_ids:
            self._queued.pop(fact_id, None)
        if self.vectors is not None:
            self.vectors.delete(fact_ids)

    # -- embedding ---------------------------------------------------------------------------

    def queue(self, facts: Iterable[Fact]) -> None:
        """Have these facts embedded in the background."""
        for fact in facts:
            if len(self._queued) >= MAX_QUEUED:
                log.warning(
                    "embedding queue full; later facts wait for kb_optimization",
                    extra=log_fields(waiting=len(self._queued)),
                )
                break
            self._queued[fact.id] = fact.text
        if self._queued:
            self._queue_changed.set()

    async def embed_queued(self, store: Store) -> None:
        """Embed queued facts as they come, pausing after failures; until cancelled."""
        pause_s = _RETRY_FIRST_S
        while True:
            if not self._queued:
                self._queue_changed = trio.Event()
                await self._queue_changed.wait()
            batch = [Fact(i, text) for i, text in list(self._queued.items())[:_ROUND]]
            try:
                await self.embed_facts(store, batch)
            except AutoBotError as error:
                self.last_error = describe_error(error)
                log.warning(
                    "facts not embedded; trying again later",
                    extra=log_fields(facts=len(batch), error=self.last_error, pause_s=pause_s),
                )
                await trio.sleep(pause_s)
                pause_s = min(RETRY_MAX_S, pause_s * 2)
                continue
            pause_s = _RETRY_FIRST_S
            self.last_error = ""

    async def embed_facts(self, store: Store, facts: Sequence[Fact]) -> int:
        """Embed ``facts``, store their embeddings and index them here; how many were stored.

        Facts deleted meanwhile are skipped by the store. Raises the
        provider's or the store's error; nothing is stored for a batch whose
        embedding failed.
        """
        if not facts:
            return 0
        matrix = await self.embedder.embed([fact.text for fact in facts])
        encoded = {fact.id: encode_vector(row) for fact, row in zip(facts, matrix, strict=True)}
        self._mark(("vectors", fact_id) for fact_id in encoded)
        stored = set(await store.put_fact_vectors(self.model, encoded))
        for fact in facts:
            self._queued.pop(fact.id, None)
        vectors = self.vectors
        if vectors is not None and stored and vectors.dimension in (None, matrix.shape[1]):
            rows = [n for n, fact in enumerate(facts) if fact.id in stored]
            vectors.add([facts[n].id for n in rows], matrix[rows])
        self.embedded += len(stored)
        return len(stored)

    # -- searching ---------------------------------------------------------------------------

    async def search(self, query: str, wanted: int) -> list[tuple[str, float]]:
        """``(fact_id, cosine)`` of the facts nearest ``query``'s embedding, best first.

        Run it inside ``kb.search``. ``ServiceUnavailable`` while the index is
        being built; the provider's errors when the query cannot be embedded.
        """
        vectors = self.vectors
        if vectors is None:
            raise ServiceUnavailable("the semantic index is being built; try again shortly")
        vector = await self.embedder.embed_one(query)
        if len(vectors) == 0:
            return []
        if vectors.dimension != len(vector):
            raise ServiceUnavailable(
                f"the stored embeddings have {vectors.dimension} dimensions but "
                f"{self.model!r} answers {len(vector)}: was the model changed?"
            )
        return await vectors.search(vector, wanted)
