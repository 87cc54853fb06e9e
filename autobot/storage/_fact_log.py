"""The log of fact changes: how every process learns what the others did to the facts.

Each store numbers the changes to its facts (an add, a delete, new embeddings)
in one sequence and keeps the latest of them. A process that keeps something
derived from the facts (the knowledge base's search indexes) builds it from
the facts, noting the :meth:`~autobot.storage.Store.fact_log_position` first,
and then reads the log from there, so no change made meanwhile is missed. The
store writes the change in the same step as the fact itself (the same Redis
script, the same journal commit), so a process that dies in between cannot
leave a change unlogged. Only the latest changes are kept: a reader that falls
further behind is told so (``None``) and builds afresh.

The embedded store's log lives in memory (:class:`MemoryFactLog`): it has only
one process, whose readers start from the facts at every start anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import trio

__all__ = ["FACT_LOG_RETAINED", "FACT_LOG_WAIT_S", "FactChange", "FactOp", "MemoryFactLog"]

FactOp = Literal["add", "delete", "vectors"]
#: Changes a store keeps (Redis trims approximately, so it may keep a few more).
FACT_LOG_RETAINED = 100_000
#: The longest a read waits for a change before it returns none.
FACT_LOG_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class FactChange:
    """Change number ``seq``: fact ``id`` was added, deleted, or given embeddings."""

    seq: int
    op: FactOp
    id: str


class MemoryFactLog:
    """The latest changes of one process's facts, and a wait for the next."""

    def __init__(self, retained: int = FACT_LOG_RETAINED) -> None:
        # Trimmed to ``retained`` whenever it holds twice that: O(1) to index, amortised.
        self._changes: list[FactChange] = []
        self._retained = retained
        self.position = 0
        self._changed = trio.Event()

    def append(self, op: FactOp, ids: Iterable[str]) -> None:
        for fact_id in ids:
            self.position += 1
            self._changes.append(FactChange(self.position, op, fact_id))
        if len(self._changes) >= 2 * self._retained:
            del self._changes[: -self._retained]
        self._changed.set()
        self._changed = trio.Event()

    async def read(self, after: int, max_count: int) -> list[FactChange] | None:
        """The changes after ``after``, waiting up to :data:`FACT_LOG_WAIT_S` for one."""
        if after >= self.position:
            with trio.move_on_after(FACT_LOG_WAIT_S):
                await self._changed.wait()
        else:
            await trio.lowlevel.checkpoint()
        if after > self.position:
            return None  # a position from another log
        if not self._changes or after >= self.position:
            return []
        first = self._changes[0].seq
        if after + 1 < first:
            return None  # the changes right after ``after`` are gone
        start = after + 1 - first
        return self._changes[start : start + max_count]
