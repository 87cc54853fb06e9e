"""Reciprocal rank fusion of a keyword and a semantic ranking."""

from __future__ import annotations

import pytest

from autobot.knowledge._fusion import reciprocal_rank_fusion


def test_a_fact_ranked_well_by_both_beats_one_ranked_first_by_one() -> None:
    keyword = [("a", 12.5), ("b", 9.0), ("c", 1.0)]
    semantic = [("d", 0.91), ("b", 0.90), ("e", 0.5), ("a", 0.10)]
    fused = reciprocal_rank_fusion([keyword, semantic], limit=10)
    assert [item for item, _ in fused] == ["b", "a", "d", "c", "e"]
    assert fused[0][1] == pytest.approx(2 / 62)
    assert fused[1][1] == pytest.approx(1 / 61 + 1 / 64)


def test_scores_are_ignored_only_ranks_count() -> None:
    one = reciprocal_rank_fusion([[("x", 1000.0), ("y", 999.0)]], limit=2)
    other = reciprocal_rank_fusion([[("x", 0.2), ("y", 0.1)]], limit=2)
    assert one == other == [("x", pytest.approx(1 / 61)), ("y", pytest.approx(1 / 62))]


def test_limit_k_and_empty_inputs() -> None:
    ranking = [(f"f{n}", 1.0) for n in range(20)]
    assert len(reciprocal_rank_fusion([ranking], limit=5)) == 5
    assert reciprocal_rank_fusion([ranking], limit=0) == []
    assert reciprocal_rank_fusion([[], []], limit=5) == []
    assert reciprocal_rank_fusion([ranking[:1]], limit=1, k=0) == [("f0", 1.0)]


def test_ties_keep_first_met_order_and_repeats_count_once() -> None:
    fused = reciprocal_rank_fusion([[("a", 1.0), ("b", 1.0)], [("b", 1.0), ("a", 1.0)]], 2)
    assert [item for item, _ in fused] == ["a", "b"]
    repeated = reciprocal_rank_fusion([[("a", 1.0), ("a", 0.5), ("b", 0.1)]], 3)
    assert repeated == [("a", pytest.approx(1 / 61)), ("b", pytest.approx(1 / 63))]
