"""Searching the stored facts without an index, while the index is being built.

A plain term match: a fact scores the number of distinct query words it
holds (``\\w+``, lower-cased, no stemming), ties in storage order. It is
slower and cruder than the keyword index, but it reads the store itself, so
it is never stale. The scoring runs in a thread (a scan of 100,000 facts is
CPU work), behind one limiter, abandoned if the search is cancelled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import trio
from trio.lowlevel import RunVar

from ..storage import Fact

__all__ = ["query_terms", "scan"]

_WORD = re.compile(r"\w+")
_limiter: RunVar[trio.CapacityLimiter] = RunVar("autobot.knowledge_scan_limiter")


def query_terms(text: str) -> set[str]:
    """The distinct lower-cased words of ``text``."""
    return set(_WORD.findall(text.lower()))


def _best(facts: Sequence[Fact], terms: set[str], limit: int) -> list[tuple[Fact, float]]:
    scored = []
    for order, fact in enumerate(facts):
        found = len(terms & query_terms(fact.text))
        if found:
            scored.append((-found, order, fact))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [(fact, float(-negative)) for negative, _, fact in scored[:limit]]


async def scan(facts: Sequence[Fact], query: str, limit: int) -> list[tuple[Fact, float]]:
    """The ``limit`` facts holding the most words of ``query``, best first, with their counts.

    CPU work over every fact, so it runs in a thread behind a limiter of one;
    the caller's ``kb.search`` deadline bounds it (the thread is abandoned).
    """
    terms = query_terms(query)
    if not terms:
        return []
    try:
        limiter = _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(1)
        _limiter.set(limiter)
    return await trio.to_thread.run_sync(
        _best, facts, terms, limit, limiter=limiter, abandon_on_cancel=True
    )
