"""The knowledge base: facts in the store, searched through a keyword index of this process.

The facts live in the :class:`~autobot.storage.Store` (either backend); the
index is this process's copy for searching, in a directory of its own
(:mod:`._index_dir`), and may lag or be rebuilt without losing anything.

**Keeping in step.** Every add and delete in this process updates the index
before it returns, and publishes ``{"op": "add"|"delete", "ids", "origin"}``
on the store's ``knowledge`` channel; the supervised ``knowledge`` service
(:meth:`KnowledgeBase.run`) applies other processes' events, reading an added
fact's text from the store (an add whose fact is gone by then is skipped).
Whatever the index says, a search reads every hit from the store and drops
the ones that no longer exist, so a fact deleted anywhere is never returned.

**Rebuilding.** Each run of the service subscribes to the channel, then builds
the index from the stored facts; changes that arrive meanwhile (events, and
this process's own adds and deletes) are queued and applied before the index
is used. It is built again when it turns out unusable (a failed write or
search, or its directory deleted or overwritten, which the service looks for
every :data:`WATCH_S` seconds). A run that fails (the store or the
subscription lost) is restarted by the supervisor and builds afresh.

**While not ready**, a search scans the stored facts (:mod:`._scan`) and the
``knowledge`` health check fails (``degraded``) saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .._deadlines import deadline
from .._errors import AutoBotError, ServiceUnavailable, ValidationFailed
from .._health import WatchedCheck, describe_error
from .._logging import log_fields
from ..files import run_file_io
from ..storage import Fact, Store
from ._index_dir import IndexDir, claim, new_suffix, release
from ._keyword import KeywordIndex, KeywordIndexUnusable
from ._limits import NewFact, check_batch, check_fact
from ._scan import query_terms, scan

__all__ = ["CHANNEL", "MAX_LIMIT", "WATCH_S", "KnowledgeBase", "SearchHit"]

log = logging.getLogger("autobot.knowledge")

#: The store channel carrying adds and deletes between processes.
CHANNEL = "knowledge"
#: How often the service checks that its index directory is still intact.
WATCH_S = 1.0
#: The most results one search returns.
MAX_LIMIT = 100
# Stored facts written at once by a batch add.
_BATCH_WRITERS = 16
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


class KnowledgeCheck:
    """``knowledge`` in ``/api/health``: fails (``degraded``) while the index is not ready."""

    name = "knowledge"
    critical = False

    def __init__(self, base: KnowledgeBase) -> None:
        self._base = base

    async def check(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        if self._base.index is None:
            raise ServiceUnavailable(
                f"the keyword index is not ready ({self._base.not_ready}); "
                "searches scan the stored facts meanwhile"
            )
        return {"index": "ready"}


class KnowledgeBase:
    """Facts: add, batch add (all or none), get, delete, and keyword search.

    ``store`` returns the current store (the services reopen theirs after a
    failure); the index lives under ``data_dir/knowledge``. :meth:`run` is the
    supervised service that builds the index and follows other processes.
    """

    def __init__(self, data_dir: Path, store: Callable[[], Store]) -> None:
        self._store_of = store
        self._root = Path(data_dir) / "knowledge"
        self.origin = new_suffix()
        self.index: KeywordIndex | None = None
        self.not_ready = "the knowledge service has not started"
        # Changes made while the index is being built; None when nobody builds one.
        self._pending: list[tuple[str, str]] | None = None
        self._rebuild = trio.Event()
        self.rebuilds = 0
        self.health_check = WatchedCheck(KnowledgeCheck(self), lambda: self.not_ready)

    # -- facts -------------------------------------------------------------------------

    async def add(self, text: str, metadata: dict[str, Any] | None = None) -> Fact:
        """Store one fact; it is searchable here when this returns, elsewhere soon after.

        ``ValidationFailed`` (with ``fields``) outside the limits. The write,
        the index update and the event are shielded from cancellation (each
        bounded by its own deadline), so a client that leaves midway does not
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
        """Bring this process's index up to date and tell the others."""
        if not facts:
            return
        index = self.index
        if index is not None:
            try:
                if op == "add":
                    await index.add_many([(fact.id, fact.text) for fact in facts])
                else:
                    for fact in facts:
                        await index.delete(fact.id)
            except AutoBotError as error:
                # The fact is stored: searches scan the store until the index is rebuilt.
                self._unusable(index, error, [(op, fact.id) for fact in facts])
        elif self._pending is not None:
            self._pending.extend((op, fact.id) for fact in facts)
        try:
            await store.publish(
                CHANNEL, {"op": op, "ids": [fact.id for fact in facts], "origin": self.origin}
            )
        except AutoBotError as error:
            # Stored all the same; other processes catch up when their service restarts.
            log.warning(
                "knowledge change not published",
                extra=log_fields(op=op, error=describe_error(error)),
            )

    def _unusable(
        self, index: KeywordIndex, error: BaseException, changes: list[tuple[str, str]]
    ) -> None:
        if self.index is not index:
            return  # an index already replaced: its errors do not matter
        log.warning(
            "keyword index unusable; rebuilding", extra=log_fields(error=describe_error(error))
        )
        self.index = None
        self.not_ready = f"rebuilding: {describe_error(error)}"
        self._pending = list(changes)
        self._rebuild.set()

    # -- search ------------------------------------------------------------------------

    async def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        """The facts that best match the words of ``query``, best first, under ``kb.search``.

        From the keyword index when it is ready (BM25, stemmed), else from a
        scan of the stored facts. Every hit is read from the store: a fact
        deleted since it was indexed is dropped, and the index asked for more.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(
                f"limit must be 1 to {MAX_LIMIT}",
                fields=[{"field": "limit", "message": f"must be 1 to {MAX_LIMIT}"}],
            )
        with deadline("kb.search"):
            if not query_terms(query):
                await trio.lowlevel.checkpoint()
                return []
            store = self._store_of()
            index = self.index
            if index is not None:
                try:
                    return await self._from_index(store, index, query, limit)
                except KeywordIndexUnusable as error:
                    self._unusable(index, error, [])
            return [
                _hit(fact, score)
                for fact, score in await scan(await store.list_facts(), query, limit)
            ]

    async def _from_index(
        self, store: Store, index: KeywordIndex, query: str, limit: int
    ) -> list[SearchHit]:
        wanted = limit
        for _ in range(_REFILL_ROUNDS):
            found = await index.search(query, wanted)
            hits = []
            for fact_id, score in found:
                try:
                    hits.append(_hit(await store.get_fact(fact_id), score))
                except AutoBotError as error:
                    if error.code != "fact_not_found":
                        raise
                if len(hits) == limit:
                    return hits
            if len(found) < wanted:
                return hits  # the index has no more
            wanted *= 4
        return hits

    # -- the service ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Build the index, follow other processes' changes, rebuild when needed; until cancelled.

        Reports ready at once: the index is built in the background.
        """
        store = self._store_of()
        claimed: IndexDir = await run_file_io(claim, self._root, self.origin)
        try:
            async with store.subscribe(CHANNEL) as events, trio.open_nursery() as nursery:
                task_status.started()
                nursery.start_soon(self._follow, store, events)
                while True:
                    await self._build(store, claimed.directory)
                    await self._watch()
        finally:
            self.index, self._pending = None, None
            self.not_ready = "the knowledge service is restarting"
            with trio.CancelScope(shield=True):
                try:
                    await run_file_io(release, claimed)
                except (AutoBotError, OSError) as error:
                    log.warning(
                        "keyword index directory not removed",
                        extra=log_fields(error=describe_error(error)),
                    )

    async def _build(self, store: Store, directory: Path) -> None:
        self.index = None
        if self._pending is None:
            self._pending = []
        self._rebuild = trio.Event()
        if not self.not_ready.startswith("rebuilding"):
            self.not_ready = "being built from the stored facts"
        facts = await store.list_facts()
        index = await KeywordIndex.rebuild(directory, [(fact.id, fact.text) for fact in facts])
        while self._pending:
            changes, self._pending = self._pending, []
            await self._apply(store, index, changes)
        self.index, self._pending = index, None
        self.rebuilds += 1
        self.not_ready = ""
        log.info("keyword index ready", extra=log_fields(facts=len(facts)))

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
                self._unusable(index, error, [])
                return

    async def _follow(self, store: Store, events: Any) -> None:
        async for event in events:
            op, ids = event.get("op"), event.get("ids")
            if (
                op not in ("add", "delete")
                or not isinstance(ids, list)
                or not all(isinstance(fact_id, str) for fact_id in ids)
            ):
                log.warning(
                    "malformed knowledge event dropped", extra=log_fields(event=str(event)[:200])
                )
                continue
            if event.get("origin") == self.origin:
                continue
            changes = [(op, fact_id) for fact_id in ids]
            index = self.index
            if index is None:
                if self._pending is not None:
                    self._pending.extend(changes)
                continue
            try:
                await self._apply(store, index, changes)
            except KeywordIndexUnusable as error:
                self._unusable(index, error, changes)

    async def _apply(
        self, store: Store, index: KeywordIndex, changes: list[tuple[str, str]]
    ) -> None:
        """Apply changes to ``index``; an added fact's text is read from the store."""
        deleted = {fact_id for op, fact_id in changes if op == "delete"}
        for fact_id in deleted:
            await index.delete(fact_id)
        adds = []
        for fact_id in dict.fromkeys(i for op, i in changes if op == "add" and i not in deleted):
            try:
                fact = await store.get_fact(fact_id)
            except AutoBotError as error:
                if error.code != "fact_not_found":
                    raise
                continue  # deleted since: its delete comes, or came, on its own
            adds.append((fact.id, fact.text))
        if adds:
            await index.add_many(adds)
