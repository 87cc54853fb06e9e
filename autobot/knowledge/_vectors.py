"""An in-memory index of unit vectors by fact id, searched exactly by cosine similarity.

Exact search is one matrix-vector product and a partial sort: at 100,000
facts of 256 dimensions it takes about 2.6 ms (p50) on 2 cores, with recall
1.0, no build step, and adds and deletes that cost a row copy. An HNSW index
(``usearch``) answered in about 0.5 ms but took 47 to 134 s to build on the
same 2 cores and found only 78 to 80 % of the true top 10; the numbers are
in ``docs/knowledge.md`` ("Semantic search"). ``bench/kb_vector_bench.py``
measures both.

Storage. Rows live in fixed blocks of :data:`BLOCK_ROWS`: growing adds a
block and never copies the rows already there (a 100 MB copy would stall
the event loop for a tenth of a second at 100,000 facts).

Concurrency. A search runs in a thread (:func:`~._cpu.run_cpu`) on a
*snapshot*: the blocks, the number of rows in use and a copy of the live
mask, all taken on the event loop when the search starts. Rows are only
ever appended (a replaced vector is a new row, the old one marked dead) and
a compaction builds new blocks, so no row a snapshot can see is written
while the thread reads it. Adds and deletes therefore run on the event loop
at once, without waiting for searches. A fact deleted (or replaced) while a
search runs is dropped from its results when the thread reports back: each
row carries the serial number of the add that wrote it, and a hit counts
only if that is still the fact's current serial.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._cpu import run_cpu

__all__ = ["BLOCK_ROWS", "DimensionMismatch", "VectorIndex"]

#: Rows per storage block (8 MB at 256 dimensions).
BLOCK_ROWS = 8192
# Compact when dead rows outnumber both this and the live ones.
_COMPACT_AT = 4096
# Searches retried when facts deleted meanwhile left a result short.
_RETRIES = 3

Vectors = npt.NDArray[np.float32]


class DimensionMismatch(ValueError):
    """A vector whose length is not the index's dimension (another embedding model?)."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"vectors of this index have {expected} dimensions, not {got}")
        self.expected = expected
        self.got = got


@dataclass(frozen=True, slots=True)
class _Snapshot:
    blocks: tuple[Vectors, ...]
    alive: npt.NDArray[np.bool_]
    serials: npt.NDArray[np.int64]
    ids: list[str]


def _nearest(snapshot: _Snapshot, query: Vectors, count: int) -> list[tuple[int, float]]:
    """The ``count`` live rows most similar to ``query``, best first (runs in a thread)."""
    rows = len(snapshot.alive)
    count = min(count, int(snapshot.alive.sum()))
    if count <= 0:
        return []
    scores = np.empty(rows, dtype=np.float32)
    for number, block in enumerate(snapshot.blocks):
        start = number * BLOCK_ROWS
        stop = min(rows, start + BLOCK_ROWS)
        if start >= stop:
            break
        np.matmul(block[: stop - start], query, out=scores[start:stop])
    scores[~snapshot.alive] = -np.inf
    top = np.argpartition(scores, rows - count)[rows - count :]
    # Best first; equal scores by row (older first), so results are deterministic.
    order = np.lexsort((top, -scores[top]))
    return [(int(top[i]), float(scores[top[i]])) for i in order]


def _unit_rows(vectors: object, dimension: int | None) -> Vectors:
    matrix = np.array(vectors, dtype=np.float32, ndmin=2)
    if matrix.ndim != 2:
        raise ValueError(f"expected one vector per id, got an array of shape {matrix.shape}")
    if dimension is not None and matrix.shape[1] != dimension:
        raise DimensionMismatch(dimension, matrix.shape[1])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("vectors must be finite and not zero")
    matrix /= norms
    return matrix


class VectorIndex:
    """Unit vectors keyed by id; :meth:`search` finds the nearest by cosine similarity.

    ``dimension`` is fixed by the constructor or, if ``None``, by the first
    :meth:`add`; a vector of another length raises :class:`DimensionMismatch`.
    Vectors are normalised on the way in (zero or non-finite vectors are
    refused with ``ValueError``). Not thread-safe for writers: call
    :meth:`add`, :meth:`delete` and :meth:`clear` from the event loop (they
    are synchronous, cost a copy of the rows they write, and never wait for
    a search).

    Memory is 4 bytes per dimension per row (100 MB for 100,000 × 256), plus
    the unused part of the last block and the dead rows awaiting compaction
    (at most as many as the live ones, or 4,096).
    """

    def __init__(self, dimension: int | None = None) -> None:
        if dimension is not None and dimension < 1:
            raise ValueError("dimension must be at least 1")
        self._dimension = dimension
        self._reset()

    def _reset(self) -> None:
        self._blocks: list[Vectors] = []
        self._alive = np.zeros(0, dtype=np.bool_)
        self._serials = np.zeros(0, dtype=np.int64)
        self._ids: list[str] = []
        self._rows = 0
        self._current: dict[str, tuple[int, int]] = {}  # id -> (row, serial)
        self._next_serial = 0

    @property
    def dimension(self) -> int | None:
        """The vectors' length; ``None`` until the first add when not given."""
        return self._dimension

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, fact_id: object) -> bool:
        return fact_id in self._current

    def ids(self) -> Iterator[str]:
        """The ids in the index (a copy: safe to change the index while iterating)."""
        return iter(list(self._current))

    def add(self, ids: Sequence[str], vectors: Sequence[Sequence[float]] | Vectors) -> None:
        """Add or replace the vector of each id (``vectors[i]`` for ``ids[i]``).

        All or nothing: a wrong count, length or value raises before anything
        changes. An id given twice keeps its last vector.
        """
        if len(ids) == 0:
            return
        matrix = _unit_rows(vectors, self._dimension)
        if matrix.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {matrix.shape[0]} vectors")
        if self._dimension is None:
            self._dimension = matrix.shape[1]
            self._reset()
        self.delete(ids)
        start, end = self._rows, self._rows + len(ids)
        self._reserve(end)
        self._write(start, matrix)
        self._alive[start:end] = True
        serials = np.arange(self._next_serial, self._next_serial + len(ids), dtype=np.int64)
        self._serials[start:end] = serials
        self._next_serial += len(ids)
        for offset, fact_id in enumerate(ids):
            previous = self._current.get(fact_id)
            if previous is not None:  # the same id earlier in this batch
                self._alive[previous[0]] = False
            self._current[fact_id] = (start + offset, int(serials[offset]))
        self._ids.extend(ids)
        self._rows = end

    def delete(self, ids: Iterable[str]) -> int:
        """Remove these ids (unknown ones are ignored); returns how many were removed.

        Effective at once, for searches already running too.
        """
        removed = 0
        for fact_id in ids:
            entry = self._current.pop(fact_id, None)
            if entry is not None:
                self._alive[entry[0]] = False
                removed += 1
        dead = self._rows - len(self._current)
        if dead > _COMPACT_AT and dead > len(self._current):
            self._compact()
        return removed

    def clear(self) -> None:
        """Remove everything (the dimension stays; a resync adds all again)."""
        self._reset()

    def nearest(self, vector: Sequence[float] | Vectors, limit: int) -> list[tuple[str, float]]:
        """The search, on the calling thread: up to ``limit`` ``(id, cosine)``, best first.

        For benchmarks and synchronous callers; async code uses :meth:`search`.
        """
        query, snapshot = self._query(vector), self._snapshot()
        return self._hits(snapshot, _nearest(snapshot, query, limit), limit)

    async def search(
        self, vector: Sequence[float] | Vectors, limit: int
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` ``(id, cosine)`` pairs nearest ``vector``, best first.

        The product runs in a thread behind the knowledge base's CPU limiter.
        Cancelling returns at once (the abandoned thread finishes its product
        on its snapshot and reports to no one). Ids deleted before the search
        returns are never in its result. Run it inside the caller's deadline
        (``kb.search``). Raises :class:`DimensionMismatch` for a query of
        another length.
        """
        query = self._query(vector)
        hits: list[tuple[str, float]] = []
        for _ in range(_RETRIES):
            snapshot = self._snapshot()
            # Ask for a few more than needed, for facts deleted while the thread runs.
            found = await run_cpu(_nearest, snapshot, query, limit + 8)
            hits = self._hits(snapshot, found, limit)
            if len(hits) >= min(limit, len(self)):
                break
        return hits

    # -- internals ----------------------------------------------------------------

    def _query(self, vector: Sequence[float] | Vectors) -> Vectors:
        query = np.asarray(vector, dtype=np.float32)
        if query.ndim != 1:
            raise ValueError(f"a query is one vector, not an array of shape {query.shape}")
        if self._dimension is not None and query.shape[0] != self._dimension:
            raise DimensionMismatch(self._dimension, query.shape[0])
        norm = float(np.linalg.norm(query))
        if not (np.isfinite(norm) and norm > 0):
            raise ValueError("a query vector must be finite and not zero")
        return query / norm

    def _snapshot(self) -> _Snapshot:
        rows = self._rows
        return _Snapshot(tuple(self._blocks), self._alive[:rows].copy(), self._serials, self._ids)

    def _hits(
        self, snapshot: _Snapshot, found: list[tuple[int, float]], limit: int
    ) -> list[tuple[str, float]]:
        hits = []
        for row, score in found:
            fact_id = snapshot.ids[row]
            entry = self._current.get(fact_id)
            if entry is not None and entry[1] == snapshot.serials[row]:
                hits.append((fact_id, score))
                if len(hits) == limit:
                    break
        return hits

    def _reserve(self, rows: int) -> None:
        assert self._dimension is not None
        while len(self._blocks) * BLOCK_ROWS < rows:
            self._blocks.append(np.zeros((BLOCK_ROWS, self._dimension), dtype=np.float32))
        capacity = len(self._alive)
        if rows <= capacity:
            return
        capacity = max(BLOCK_ROWS, rows, capacity + capacity // 2)
        # New arrays, never resized in place: running searches keep reading the old ones.
        alive = np.zeros(capacity, dtype=np.bool_)
        alive[: self._rows] = self._alive[: self._rows]
        serials = np.zeros(capacity, dtype=np.int64)
        serials[: self._rows] = self._serials[: self._rows]
        self._alive, self._serials = alive, serials

    def _write(self, start: int, matrix: Vectors) -> None:
        """Copy ``matrix`` into rows ``start`` on (the blocks are already there)."""
        done = 0
        while done < len(matrix):
            number, offset = divmod(start + done, BLOCK_ROWS)
            count = min(len(matrix) - done, BLOCK_ROWS - offset)
            self._blocks[number][offset : offset + count] = matrix[done : done + count]
            done += count

    def _compact(self) -> None:
        """New blocks holding only the live rows (their cost is at most the dead rows')."""
        live = np.flatnonzero(self._alive[: self._rows])
        parts = []
        for number, block in enumerate(self._blocks):
            start = number * BLOCK_ROWS
            rows = live[(live >= start) & (live < start + BLOCK_ROWS)]
            parts.append(block[rows - start])
        matrix = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
        serials = self._serials[live]
        ids = [self._ids[row] for row in live]
        self._blocks, self._rows = [], 0
        self._alive, self._serials = np.zeros(0, dtype=np.bool_), np.zeros(0, dtype=np.int64)
        self._reserve(len(live))
        self._write(0, matrix)
        self._alive[: len(live)] = True
        self._serials[: len(live)] = serials
        self._ids = ids
        self._rows = len(live)
        self._current = {fact_id: (row, int(self._serials[row])) for row, fact_id in enumerate(ids)}
