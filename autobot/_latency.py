"""A fixed-size latency histogram: cheap to record, bounded in memory.

Each deadline scope owns one. Buckets grow geometrically by a factor of
2**(1/4) (about 19 %) from 100 µs up to about 1,700 s, so a quantile read from
the histogram is at most one bucket (19 %) above the true value, whatever the
number of observations. Recording is one ``log2`` and two increments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LatencyHistogram", "LatencySummary"]

_SMALLEST_S = 1e-4
_BUCKETS_PER_DOUBLING = 4
_BUCKET_COUNT = 96  # 96 / 4 = 24 doublings: 1e-4 * 2**24 s is about 28 minutes


def _bucket_upper_bound(index: int) -> float:
    if index >= _BUCKET_COUNT:
        return math.inf  # the overflow bucket
    return _SMALLEST_S * 2 ** (index / _BUCKETS_PER_DOUBLING)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """A point-in-time reading of a :class:`LatencyHistogram`."""

    count: int
    expired: int
    p50_s: float
    p99_s: float
    max_s: float


class LatencyHistogram:
    """Counts of observed durations in log-scale buckets.

    ``expired`` counts observations that hit their budget; they are recorded in
    the histogram at the budget, which is the least they would have taken.
    """

    __slots__ = ("_buckets", "count", "expired", "max_s")

    def __init__(self) -> None:
        self._buckets = [0] * (_BUCKET_COUNT + 1)  # the last bucket catches everything larger
        self.count = 0
        self.expired = 0
        self.max_s = 0.0

    def record(self, seconds: float, *, expired: bool = False) -> None:
        if seconds <= _SMALLEST_S:
            index = 0
        else:
            index = min(
                math.ceil(math.log2(seconds / _SMALLEST_S) * _BUCKETS_PER_DOUBLING),
                _BUCKET_COUNT,
            )
        self._buckets[index] += 1
        self.count += 1
        if expired:
            self.expired += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile, capped at the max.

        0.0 when nothing has been recorded.
        """
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, bucket in enumerate(self._buckets):
            seen += bucket
            if seen >= rank:
                return min(_bucket_upper_bound(index), self.max_s)
        return self.max_s  # pragma: no cover - the loop always reaches rank

    def summary(self) -> LatencySummary:
        return LatencySummary(
            count=self.count,
            expired=self.expired,
            p50_s=self.quantile(0.50),
            p99_s=self.quantile(0.99),
            max_s=self.max_s,
        )

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]
