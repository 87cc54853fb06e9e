"""Reciprocal rank fusion: one ranking from several, by rank alone."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["RRF_K", "reciprocal_rank_fusion"]

#: The constant of Cormack, Clarke and Büttcher (SIGIR 2009), used by most engines since.
RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[tuple[str, float]]], limit: int, k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse ``rankings`` (each best first, ``(id, score)``) into one, best first.

    Each id scores ``Σ 1 / (k + rank)`` over the rankings it appears in, its
    rank counted from 1; the input scores are ignored. That is the point:
    BM25 scores are unbounded and depend on the query and the corpus, cosine
    similarities lie in [-1, 1] and bunch together, so any weighted sum of
    the two needs tuning per corpus and breaks when either changes. Ranks
    need none, and a fact ranked well by both beats one ranked first by only
    one. ``k`` damps the weight of the very top ranks (60 is the usual value).

    Ties (equal fused scores) keep the order in which ids were first met,
    ranking by ranking, so the result is deterministic. An id repeated
    within one ranking counts at its best rank only. Returns at most
    ``limit`` items; ``limit`` of 0 or less gives an empty list.
    """
    if limit <= 0:
        return []
    fused: dict[str, float] = {}
    for ranking in rankings:
        seen: set[str] = set()
        for rank, (item, _score) in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    # sorted() is stable: equal scores stay in first-met order.
    return sorted(fused.items(), key=lambda pair: -pair[1])[:limit]
