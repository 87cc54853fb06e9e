"""The knowledge base: facts in the store, searched through a keyword index of this process.

The facts live in the :class:`~autobot.storage.Store` (either backend); the
index is this process's copy for searching, in a directory of its own
(:mod:`._index_dir`), and may lag or be rebuilt without losing anything.

**Keeping in step.** The store logs every change to its facts
(:mod:`autobot.storage._fact_log`), whoever made it: this process's adds and
deletes, another process's, an operation writing facts straight to the store.
The supervised ``knowledge`` service (:meth:`KnowledgeBase.run`) notes the
log's position, builds the index from the stored facts, and then applies the
log from that position on, reading an added fact's text from the store (an
add whose fact is gone by then is skipped: its delete follows). This
process's own adds and deletes also update the index before they return, so
they are searchable here at once; the service skips them when they come by in
the log. Whatever the index says, a search reads every hit from the store and
drops the ones that no longer exist, so a fact deleted anywhere is never
returned.

**Rebuilding.** The index is built again when the log no longer holds the
changes after the position it reached (it fell behind, or Redis was reset),
or when it turns out unusable (a failed write or search, or its directory
deleted or overwritten, which the service looks for every :data:`WATCH_S`
seconds). A run that fails (the store lost) is restarted by the supervisor
and builds afresh.

**While not ready**, a search scans the stored facts (:mod:`._scan`) and the
``knowledge`` health check fails (``degraded``) saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._deadlines import deadline
from .._errors import AutoBotError, ServiceUnavailable, ValidationFailed
from .._health import WatchedCheck, describe_error
from .._logging import log_fields
from ..files import run_file_io
from ..storage import Fact, FactChange, Store
from ._fusion import reciprocal_rank_fusion
from ._index_dir import IndexDir, claim, new_suffix, release
from ._keyword import KeywordIndex, KeywordIndexUnusable
from ._limits import NewFact, check_batch, check_fact
from ._scan import query_terms, scan

if TYPE_CHECKING:  # numpy is imported only when semantic search is on
    from ._embeddings import EmbeddingSource
    from ._semantic import SemanticIndex

__all__ = [
    "MAX_LIMIT",
    "MODES",
    "WATCH_S",
    "KnowledgeBase",
    "SearchHit",
    "SearchMode",
    "SearchResults",
]

log = logging.getLogger("autobot.knowledge")

#: How often the service checks that its index directory is still intact.
WATCH_S = 1.0
#: The most results one search returns.
MAX_LIMIT = 100
# Stored facts written at once by a batch add.
_BATCH_WRITERS = 16
# Changes read from the fact log at once.
_LOG_BATCH = 1000
# Candidates asked for beyond the limit, for facts deleted but not yet out of an index.
_CANDIDATE_SLACK = 10
# Rounds of asking the index for more hits when some were deleted meanwhile.
_REFILL_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: the stored fact and its score (higher is better)."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "score": self.score, "metadata": self.metadata}


def _hit(fact: Fact, score: float) -> SearchHit:
    return SearchHit(fact.id, fact.text, score, fact.metadata)


SearchMode = Literal["keyword", "semantic", "hybrid"]
MODES: tuple[SearchMode, ...] = ("keyword", "semantic", "hybrid")


class SearchResults(list[SearchHit]):
    """The hits of one search, best first, and how they were found.

    ``semantic_error`` is the contract's error object when a ``hybrid``
    search had to answer from keywords alone.
    """

    def __init__(
        self,
        hits: Iterable[SearchHit],
        mode: SearchMode,
        *,
        semantic_error: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(hits)
        self.mode = mode
        self.semantic_error = semantic_error

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"mode": self.mode, "results": [hit.to_json() for hit in self]}
        if self.semantic_error is not None:
            body["semantic_error"] = self.semantic_error
        return body


class KnowledgeCheck:
    """``knowledge`` in ``/api/health``: fails (``degraded``) while the index is not ready."""

    name = "knowledge"
    critical = False

    def __init__(self, base: KnowledgeBase) -> None:
        self._base = base

    async def check(self) -> dict[str, Any]:
        if self._base.index is None:
            await trio.lowlevel.checkpoint()
            raise ServiceUnavailable(
                f"the keyword index is not ready ({self._base.not_ready}); "
                "searches scan the stored facts meanwhile"
            )
        index = self._base.index
        status: dict[str, Any] = {"index": "ready", "facts": await index.count()}
        if self._base.semantic is not None:
            status["semantic"] = self._base.semantic.status()
        return status


class KnowledgeBase:
    """Facts: add, batch add (all or none), get, delete, and keyword search.

    ``store`` returns the current store (the services reopen theirs after a
    failure); the index lives under ``data_dir/knowledge``. :meth:`run` is the
    supervised service that builds the index and follows other processes.
    """

    def __init__(
        self,
        data_dir: Path,
        store: Callable[[], Store],
        *,
        embed_model: str | None = None,
        embeddings: Callable[[], EmbeddingSource] | None = None,
    ) -> None:
        self._store_of = store
        self._root = Path(data_dir) / "knowledge"
        self.origin = new_suffix()
        self.index: KeywordIndex | None = None
        self.not_ready = "the knowledge service has not started"
        # This process's changes already in the index, for the log reader to skip.
        self._applied_here: set[tuple[str, str]] = set()
        self.semantic: SemanticIndex | None = None
        if embed_model is not None:
            if embeddings is None:
                raise ValueError("an embedding model needs a source of embeddings")
            from ._semantic import SemanticIndex

            self.semantic = SemanticIndex(embed_model, embeddings, self._applied_here.update)
        self._rebuild = trio.Event()
        self.rebuilds = 0
        self.health_check = WatchedCheck(KnowledgeCheck(self), lambda: self.not_ready)

    # -- facts -------------------------------------------------------------------------

    async def add(self, text: str, metadata: dict[str, Any] | None = None) -> Fact:
        """Store one fact; it is searchable here when this returns, elsewhere soon after.

        ``ValidationFailed`` (with ``fields``) outside the limits. The write
        and the index update are shielded from cancellation (each bounded by
        its own deadline), so a client that leaves midway does not
        leave a fact stored but unindexed.
        """
        new = NewFact(text, {} if metadata is None else metadata)
        check_fact(new)
        store = self._store_of()
        with trio.CancelScope(shield=True):
            fact = await store.put_fact(new.text, new.metadata)
            await self._changed(store, "add", [fact])
        return fact

    async def add_many(self, facts: Sequence[NewFact]) -> list[Fact]:
        """Store every fact of the batch, or, if any write fails, none of them.

        All are checked first (``ValidationFailed`` naming ``facts.<n>.<field>``).
        The writes run a few at once; after a failure no more start, those
        already written are deleted again, and the error is raised. Shielded
        like :meth:`add`. A write that failed with an unknown outcome (a
        timeout) may still have stored its fact: the store decides the id, so
        that one cannot be found to delete.
        """
        check_batch(facts)
        store = self._store_of()
        stored: list[Fact | None] = [None] * len(facts)
        failure: list[AutoBotError] = []
        queue = iter(range(len(facts)))

        async def writer() -> None:
            for n in queue:
                if failure:
                    return
                try:
                    stored[n] = await store.put_fact(facts[n].text, facts[n].metadata)
                except AutoBotError as error:
                    failure.append(error)
                    return

        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for _ in range(min(_BATCH_WRITERS, len(facts))):
                    nursery.start_soon(writer)
            added = [fact for fact in stored if fact is not None]
            if failure:
                await self._undo(store, added)
                raise failure[0]
            await self._changed(store, "add", added)
        return added

    async def _undo(self, store: Store, added: list[Fact]) -> None:
        for fact in added:
            try:
                await store.delete_fact(fact.id)
            except AutoBotError as error:
                if error.code != "fact_not_found":
                    log.error(
                        "a batch's fact could not be removed after the batch failed",
                        extra=log_fields(fact=fact.id, error=describe_error(error)),
                    )

    async def get(self, fact_id: str) -> Fact:
        """The fact; ``NotFound`` ``fact_not_found``."""
        return await self._store_of().get_fact(fact_id)

    async def delete(self, fact_id: str) -> None:
        """Delete the fact everywhere; ``NotFound`` ``fact_not_found``.

        Shielded like :meth:`add`.
        """
        store = self._store_of()
        with trio.CancelScope(shield=True):
            await store.delete_fact(fact_id)
            await self._changed(store, "delete", [Fact(fact_id, "")])

    async def _changed(self, store: Store, op: str, facts: list[Fact]) -> None:
        """Bring this process's indexes up to date (the store has logged the change)."""
        if self.semantic is not None:
            if op == "add":
                self.semantic.queue(facts)
            else:
                self.semantic.forget(fact.id for fact in facts)
        index = self.index
        if index is None or not facts:
            return  # the service applies it from the log once the index is built
        # Marked first: the log reader may meet the change while the index is being written.
        self._applied_here.update((op, fact.id) for fact in facts)
        try:
            if op == "add":
                await index.add_many([(fact.id, fact.text) for fact in facts])
            else:
                await index.change([], [fact.id for fact in facts])
        except AutoBotError as error:
            # The fact is stored: searches scan the store until the index is rebuilt.
            self._unusable(index, describe_error(error))

    def _unusable(self, index: KeywordIndex, reason: str) -> None:
        if self.index is not index:
            return  # an index already replaced: its errors do not matter
        log.warning("keyword index unusable; rebuilding", extra=log_fields(error=reason))
        self.index = None
        self.not_ready = f"rebuilding: {reason}"
        self._rebuild.set()

    # -- embeddings -------------------------------------------------------------------

    async def unembedded(self) -> list[Fact]:
        """The stored facts without an embedding by the configured model (none without one)."""
        if self.semantic is None:
            await trio.lowlevel.checkpoint()
            return []
        store = self._store_of()
        facts = await store.list_facts()
        stored = await store.list_fact_vectors(self.semantic.model)
        return [fact for fact in facts if fact.id not in stored]

    async def embed(self, facts: Sequence[Fact]) -> int:
        """Embed and store these facts now (``kb_optimization``); how many were stored.

        Raises the provider's error. ``ValidationFailed``
        ``embeddings_not_configured`` without a model.
        """
        if self.semantic is None:
            raise ValidationFailed(
                "no embedding model is configured (AUTOBOT_EMBED_MODEL)",
                code="embeddings_not_configured",
            )
        return await self.semantic.embed_facts(self._store_of(), facts)

    # -- search ------------------------------------------------------------------------

    @property
    def default_mode(self) -> SearchMode:
        """``hybrid`` when an embedding model is configured, else ``keyword``."""
        return "keyword" if self.semantic is None else "hybrid"

    async def search(
        self, query: str, limit: int = 10, mode: SearchMode | None = None
    ) -> SearchResults:
        """The facts that best match ``query``, best first, under ``kb.search``.

        ``keyword``: BM25 over stemmed words, from the keyword index when it
        is ready, else from a scan of the stored facts. ``semantic``: the
        nearest embeddings by cosine (``ServiceUnavailable`` while that index
        is built; the provider's error when the query cannot be embedded).
        ``hybrid`` (the default with a model): both at once, fused by
        reciprocal rank; if the semantic half fails, the keyword half is
        returned with the error in ``semantic_error``. Without a model,
        ``semantic`` and ``hybrid`` are 422 ``embeddings_not_configured``.
        Every hit is read from the store: a fact deleted since it was indexed
        is never returned.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(
                f"limit must be 1 to {MAX_LIMIT}",
                fields=[{"field": "limit", "message": f"must be 1 to {MAX_LIMIT}"}],
            )
        mode = self.default_mode if mode is None else mode
        if mode not in MODES:
            raise ValidationFailed(
                f"mode must be one of {', '.join(MODES)}",
                fields=[{"field": "mode", "message": f"must be one of {', '.join(MODES)}"}],
            )
        semantic = self.semantic
        if mode != "keyword" and semantic is None:
            raise ValidationFailed(
                f"mode {mode!r} needs an embedding model (AUTOBOT_EMBED_MODEL), "
                "and none is configured",
                code="embeddings_not_configured",
                fields=[{"field": "mode", "message": "no embedding model is configured"}],
            )
        with deadline("kb.search"):
            if not query_terms(query):
                await trio.lowlevel.checkpoint()
                return SearchResults([], mode)
            store = self._store_of()
            if mode == "keyword":
                return SearchResults(await self._keyword_hits(store, query, limit), mode)
            assert semantic is not None
            wanted = limit + _CANDIDATE_SLACK
            if mode == "semantic":
                found = await semantic.search(query, wanted)
                return SearchResults(await self._read(store, found, limit), mode)
            return await self._hybrid(store, semantic, query, limit)

    async def _hybrid(
        self, store: Store, semantic: SemanticIndex, query: str, limit: int
    ) -> SearchResults:
        wanted = 2 * limit + _CANDIDATE_SLACK
        rankings: dict[str, list[tuple[str, float]]] = {}
        failure: list[AutoBotError] = []

        async def keyword() -> None:
            rankings["keyword"] = await self._keyword_ranking(store, query, wanted)

        async def nearest() -> None:
            try:
                rankings["semantic"] = await semantic.search(query, wanted)
            except AutoBotError as error:
                failure.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keyword)
            nursery.start_soon(nearest)
        fused = reciprocal_rank_fusion([rankings["keyword"], rankings.get("semantic", [])], wanted)
        hits = await self._read(store, fused, limit)
        error = failure[0].to_body()["error"] if failure else None
        if error is not None:
            log.warning(
                "hybrid search without its semantic half",
                extra=log_fields(code=error["code"], error=error["message"]),
            )
        return SearchResults(hits, "hybrid", semantic_error=error)

    async def _keyword_hits(self, store: Store, query: str, limit: int) -> list[SearchHit]:
        index = self.index
        if index is not None:
            try:
                return await self._from_index(store, index, query, limit)
            except KeywordIndexUnusable as error:
                self._unusable(index, describe_error(error))
        return [
            _hit(fact, score) for fact, score in await scan(await store.list_facts(), query, limit)
        ]

    async def _keyword_ranking(
        self, store: Store, query: str, wanted: int
    ) -> list[tuple[str, float]]:
        index = self.index
        if index is not None:
            try:
                return await index.search(query, wanted)
            except KeywordIndexUnusable as error:
                self._unusable(index, describe_error(error))
        return [
            (fact.id, score) for fact, score in await scan(await store.list_facts(), query, wanted)
        ]

    async def _read(
        self, store: Store, found: Sequence[tuple[str, float]], limit: int
    ) -> list[SearchHit]:
        """The stored facts of ``found``, in its order, those deleted since left out."""
        facts = await store.get_facts([fact_id for fact_id, _ in found])
        return [_hit(facts[i], score) for i, score in found if i in facts][:limit]

    async def _from_index(
        self, store: Store, index: KeywordIndex, query: str, limit: int
    ) -> list[SearchHit]:
        wanted = limit
        for _ in range(_REFILL_ROUNDS):
            found = await index.search(query, wanted)
            facts = await store.get_facts([fact_id for fact_id, _ in found])
            hits = [_hit(facts[i], score) for i, score in found if i in facts][:limit]
            if len(hits) == limit or len(found) < wanted:
                return hits  # enough, or the index has no more
            wanted *= 4
        return hits

    # -- the service ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Build the index, follow the fact log, rebuild when needed; until cancelled.

        Reports ready at once: the index is built in the background.
        """
        store = self._store_of()
        claimed: IndexDir = await run_file_io(claim, self._root, self.origin)
        try:
            task_status.started()
            while True:
                await self._serve_one_index(store, claimed.directory)
        finally:
            self.index = None
            self.not_ready = "the knowledge service is restarting"
            with trio.CancelScope(shield=True):
                try:
                    await run_file_io(release, claimed)
                except (AutoBotError, OSError) as error:
                    log.warning(
                        "keyword index directory not removed",
                        extra=log_fields(error=describe_error(error)),
                    )

    async def _serve_one_index(self, store: Store, directory: Path) -> None:
        """Build an index from the facts and keep it in step; return when it must be rebuilt."""
        self.index = None
        if self.semantic is not None:
            self.semantic.unload()
        self._applied_here.clear()
        self._rebuild = trio.Event()
        if not self.not_ready.startswith("rebuilding"):
            self.not_ready = "being built from the stored facts"
        position = await store.fact_log_position()
        facts = await store.list_facts()
        index = await KeywordIndex.rebuild(directory, [(fact.id, fact.text) for fact in facts])
        if self.semantic is not None:
            await self.semantic.load(store, facts)
        # Catch up on what changed during the build before anyone searches this index.
        while (changes := await store.read_fact_log(position, _LOG_BATCH)) is not None and changes:
            await self._apply(store, index, changes)
            position = changes[-1].seq
        if changes is None:
            self.not_ready = "rebuilding: the fact log moved on during the build"
            return
        self.index = index
        self.rebuilds += 1
        self.not_ready = ""
        log.info("keyword index ready", extra=log_fields(facts=len(facts)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow, store, index, position)
            if self.semantic is not None:
                nursery.start_soon(self.semantic.embed_queued, store)
            await self._watch()
            nursery.cancel_scope.cancel()

    async def _watch(self) -> None:
        """Return when the index must be rebuilt."""
        while True:
            with trio.move_on_after(WATCH_S):
                await self._rebuild.wait()
                return
            index = self.index
            if index is None:
                return
            try:
                await index.verify()
            except KeywordIndexUnusable as error:
                self._unusable(index, describe_error(error))
                return

    async def _follow(self, store: Store, index: KeywordIndex, position: int) -> None:
        """Apply the fact log to ``index`` from ``position`` on, until cancelled."""
        while True:
            changes = await store.read_fact_log(position, _LOG_BATCH)
            if changes is None:
                self._unusable(index, "this process fell behind the fact log")
                return
            if not changes:
                continue
            fresh = []
            for change in changes:
                key = (change.op, change.id)
                if key in self._applied_here:
                    self._applied_here.discard(key)
                else:
                    fresh.append(change)
            try:
                await self._apply(store, index, fresh)
            except KeywordIndexUnusable as error:
                self._unusable(index, describe_error(error))
                return
            position = changes[-1].seq

    async def _apply(self, store: Store, index: KeywordIndex, changes: list[FactChange]) -> None:
        """Apply log changes to ``index``; an added fact's text is read from the store."""
        deleted = {change.id for change in changes if change.op == "delete"}
        added = [c.id for c in changes if c.op == "add" and c.id not in deleted]
        facts = await store.get_facts(list(dict.fromkeys(added))) if added else {}
        # An add whose fact is gone is skipped: it was deleted since, and that delete is logged.
        if deleted or facts:
            await index.change([(fact.id, fact.text) for fact in facts.values()], sorted(deleted))
        if self.semantic is not None:
            await self.semantic.apply(store, changes)
