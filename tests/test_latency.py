"""The fixed-size latency histogram behind every deadline scope."""

from __future__ import annotations

import random
import sys

import pytest

from autobot._latency import LatencyHistogram


def test_empty_histogram_reads_zero() -> None:
    summary = LatencyHistogram().summary()
    assert (summary.count, summary.p50_s, summary.p99_s, summary.max_s) == (0, 0, 0, 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_are_within_one_bucket_of_the_truth(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(-4, 1.5) for _ in range(10_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        true = ordered[int(q * len(ordered)) - 1]
        assert true * 0.99 <= histogram.quantile(q) <= true * 1.19 * 1.01
    assert histogram.max_s == max(values)


def test_memory_does_not_grow_with_observations() -> None:
    histogram = LatencyHistogram()
    histogram.record(0.01)
    size = sys.getsizeof(histogram._buckets)
    for i in range(100_000):
        histogram.record(i * 1e-3)
    assert sys.getsizeof(histogram._buckets) == size
    assert histogram.count == 100_001


def test_extremes_land_in_the_end_buckets() -> None:
    histogram = LatencyHistogram()
    histogram.record(0.0)
    histogram.record(1e9)
    assert histogram.quantile(0.5) == pytest.approx(1e-4)
    assert histogram.quantile(1.0) == 1e9
