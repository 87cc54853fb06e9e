"""The keyword index: BM25 over facts with English stemming, on disk, kept by Tantivy.

Tantivy (a Rust library) does the tokenizing (``en_stem``: words, lower case,
Porter stemming), the ranking and the storage; this module only maps fact ids
to documents and keeps its calls off the event loop. Why Tantivy and not
SQLite FTS5 or bm25s: ``docs/knowledge.md``.

Every engine call runs in a thread behind the knowledge base's one CPU
limiter (:mod:`._cpu`, shared with vector search): a search under
``kb.search``, a write under ``file.io``. A cancelled call is abandoned (its
thread finishes the one call; the limiter counts it until then). Writes
also take a thread lock held by the thread itself, so an abandoned write
still finishes before the next one starts.

**Group commit.** A commit (segment files written, the searcher reloaded) costs
tens of milliseconds whatever it holds, so the changes that arrive while one
commit runs wait and go in the next one together: with 20 clients adding
facts at once there is one write in a thread at a time, not 20 queued on the
lock and holding every thread a search could use.

The directory holds a version marker (:data:`MARKER`). An index that cannot be
read, or was written by another version of this module or of Tantivy's index
format, raises :class:`KeywordIndexUnusable`: the caller rebuilds it from the
stored facts with :meth:`KeywordIndex.rebuild`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import tantivy
import trio

from .._deadlines import deadline
from .._errors import AutoBotError, ServiceUnavailable
from ._cpu import run_cpu

__all__ = ["MARKER", "KeywordIndex", "KeywordIndexUnusable"]

T = TypeVar("T")

#: The version marker's file name inside the index directory.
MARKER = "autobot-keyword.json"
#: Bumped when the schema or the way facts are indexed changes.
SCHEMA_VERSION = 1
#: Facts indexed per thread step during a rebuild (each step under ``file.io``).
REBUILD_BATCH = 5_000
WRITER_HEAP = 64_000_000

_WORD = re.compile(r"\w+")
# Hits read beyond ``limit``, so that facts tied at the cut are chosen by id too.
_TIE_SLACK = 8


class KeywordIndexUnusable(ServiceUnavailable):
    """The index on disk is missing parts, corrupt or of another version: rebuild it."""

    code = "kb_index_unusable"


def _index_format() -> str:
    # "tantivy v0.27.0, index_format v7": only the format decides readability.
    return tantivy.__version__.rsplit(",", 1)[-1].strip()


def _marker() -> dict[str, Any]:
    return {"engine": "tantivy", "schema": SCHEMA_VERSION, "index_format": _index_format()}


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("text", tokenizer_name="en_stem")
    return builder.build()


async def _write(function: Callable[..., T], *args: Any) -> T:
    """An index write (or open, or move) in a thread, within ``file.io``."""
    with deadline("file.io"):
        return await run_cpu(function, *args)


async def _query(function: Callable[..., T], *args: Any) -> T:
    """A search in a thread, within ``kb.search``."""
    with deadline("kb.search"):
        return await run_cpu(function, *args)


class _Engine:
    """The blocking half: one Tantivy index and its writer, called from threads."""

    def __init__(self, directory: Path, *, create: bool) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.broken = ""  # why writes are refused, after one failed
        if create:
            directory.mkdir(parents=True, exist_ok=True)
            self.index = tantivy.Index(_schema(), path=str(directory))
            (directory / MARKER).write_text(json.dumps(_marker()))
        else:
            self.check_marker()
            try:
                self.index = tantivy.Index.open(str(directory))
            except ValueError as error:
                raise KeywordIndexUnusable(f"the keyword index cannot be read: {error}") from None
        self.writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=1)

    def check_marker(self) -> None:
        try:
            found = json.loads((self.directory / MARKER).read_text())
        except (OSError, ValueError):
            raise KeywordIndexUnusable("the keyword index has no readable version marker") from None
        if found != _marker():
            raise KeywordIndexUnusable(
                f"the keyword index is of another version ({found}, expected {_marker()})"
            )

    def verify(self) -> None:
        self.check_marker()
        try:
            json.loads((self.directory / "meta.json").read_text())
        except (OSError, ValueError):
            raise KeywordIndexUnusable("the keyword index has no readable meta.json") from None

    def write(self, adds: Iterable[tuple[str, str]], deletes: Iterable[str]) -> None:
        with self.lock:
            if self.broken:
                # Tantivy's writer cannot be used after a failed rollback (it panics).
                raise KeywordIndexUnusable(self.broken)
            try:
                for fact_id in deletes:
                    self.writer.delete_documents_by_term("id", fact_id)
                for fact_id, text in adds:
                    self.writer.delete_documents_by_term("id", fact_id)
                    self.writer.add_document(tantivy.Document(id=fact_id, text=text))
                self.writer.commit()
                self.index.reload()
            except ValueError as error:
                with contextlib.suppress(ValueError):  # a directory gone cannot roll back either
                    self.writer.rollback()
                self.broken = f"the keyword index cannot be written: {error}"
                raise KeywordIndexUnusable(self.broken) from None

    def search(self, words: str, limit: int) -> list[tuple[str, float]]:
        try:
            query, _errors = self.index.parse_query_lenient(words, ["text"])
            searcher = self.index.searcher()
            hits = searcher.search(query, limit + _TIE_SLACK, count=False).hits
            found = [(searcher.doc(address)["id"][0], score) for score, address in hits]
        except ValueError as error:
            raise KeywordIndexUnusable(f"the keyword index cannot be searched: {error}") from None
        # Tantivy orders equal scores by where the documents sit, which its background
        # merges change between two searches: equal scores go by fact id instead.
        found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found[:limit]

    def count(self) -> int:
        return self.index.searcher().num_docs


class _Batch:
    """The changes of one commit: deletes first, then adds (by id: the last text wins)."""

    __slots__ = ("adds", "deletes", "done", "error")

    def __init__(self) -> None:
        self.adds: dict[str, str] = {}
        self.deletes: set[str] = set()
        self.done = False
        self.error: AutoBotError | None = None

    def include(self, adds: Iterable[tuple[str, str]], deletes: Iterable[str]) -> None:
        for fact_id in deletes:
            self.adds.pop(fact_id, None)  # a delete after an add of the same commit wins
            self.deletes.add(fact_id)
        for fact_id, text in adds:
            self.adds[fact_id] = text


class KeywordIndex:
    """BM25 search over ``(fact_id, text)`` pairs, kept in a directory.

    Open it with :meth:`open` (creates an empty index in a missing or empty
    directory) or :meth:`rebuild`. An add of an id already present replaces
    its text, so replaying the same add twice is harmless.
    """

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self._gathering: _Batch | None = None  # the changes for the next commit
        self._writing = False
        self._written = trio.Event()  # set, and replaced, after each commit

    @property
    def directory(self) -> Path:
        return self._engine.directory

    @classmethod
    async def open(cls, directory: Path) -> KeywordIndex:
        """The index in ``directory``; :class:`KeywordIndexUnusable` if it must be rebuilt."""

        def make() -> _Engine:
            empty = not directory.exists() or not any(directory.iterdir())
            return _Engine(directory, create=empty)

        return cls(await _write(make))

    @classmethod
    async def rebuild(
        cls,
        directory: Path,
        facts: Iterable[tuple[str, str]] | AsyncIterable[tuple[str, str]],
    ) -> KeywordIndex:
        """A new index of ``facts`` in place of whatever ``directory`` held.

        It is built beside the directory and moved in when complete, so a
        rebuild that fails or is cancelled leaves the old directory as it was.
        An index opened on the old directory must not be used afterwards.
        Each batch of :data:`REBUILD_BATCH` facts is one step under ``file.io``.
        """
        staging = directory.with_name(directory.name + ".rebuild")
        await _write(shutil.rmtree, staging, True)
        engine = await _write(lambda: _Engine(staging, create=True))
        batch: list[tuple[str, str]] = []
        if isinstance(facts, AsyncIterable):
            async for fact in facts:
                batch.append(fact)
                if len(batch) >= REBUILD_BATCH:
                    await _write(engine.write, batch, ())
                    batch = []
        else:
            for fact in facts:
                batch.append(fact)
                if len(batch) >= REBUILD_BATCH:
                    await _write(engine.write, batch, ())
                    batch = []
        await _write(engine.write, batch, ())
        del engine

        def move_in() -> None:
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if directory.exists():
                directory.rename(old)
            staging.rename(directory)
            shutil.rmtree(old, ignore_errors=True)

        await _write(move_in)
        return await cls.open(directory)

    async def add(self, fact_id: str, text: str) -> None:
        """Index one fact; searchable when this returns."""
        await self.change([(fact_id, text)], [])

    async def add_many(self, facts: list[tuple[str, str]]) -> None:
        """Index several facts in one commit (a batch add)."""
        await self.change(facts, [])

    async def delete(self, fact_id: str) -> None:
        """Remove one fact; no search started after this returns finds it."""
        await self.change([], [fact_id])

    async def change(self, adds: list[tuple[str, str]], deletes: list[str]) -> None:
        """Delete ``deletes`` and index ``adds``; searchable as such when this returns.

        Joins the changes of other callers into one commit (see the module's
        "Group commit"); a failed commit raises its error in every caller.
        """
        if self._gathering is None:
            self._gathering = _Batch()
        batch = self._gathering
        batch.include(adds, deletes)
        while not batch.done:
            if self._writing:
                await self._written.wait()
            else:
                await self._commit_gathered()
        if batch.error is not None:
            raise batch.error

    async def _commit_gathered(self) -> None:
        batch, self._gathering = self._gathering, None
        assert batch is not None
        self._writing = True
        try:
            await _write(self._engine.write, list(batch.adds.items()), list(batch.deletes))
        except AutoBotError as error:  # unusable, or file.io expired
            batch.error = error
        except BaseException:
            # Cancelled: whether the abandoned commit lands is unknown to those waiting.
            batch.error = KeywordIndexUnusable("a commit of the keyword index was interrupted")
            raise
        finally:
            batch.done = True
            self._writing = False
            self._written.set()
            self._written = trio.Event()

    async def search(self, query: str, limit: int) -> list[tuple[str, float]]:
        """``(fact_id, score)`` for the facts that best match any word of ``query``, best first.

        Only the words of ``query`` count (``\\w+``): no query syntax reaches
        the engine, so a client's ``"``, ``:`` or ``-`` cannot make it fail.
        """
        words = " ".join(_WORD.findall(query.lower()))
        if not words:
            return []
        return await _query(self._engine.search, words, limit)

    async def verify(self) -> None:
        """Raise :class:`KeywordIndexUnusable` if the directory no longer holds this index.

        A search may go on answering from files it already mapped after the
        directory was deleted or overwritten; this looks at the directory
        itself (the version marker and Tantivy's ``meta.json``), under ``file.io``.
        """
        await _write(self._engine.verify)

    async def count(self) -> int:
        """Facts in the index."""
        return await _query(self._engine.count)
