"""Prometheus metrics for one app: requests, latencies and the deadline table.

Each app owns a :class:`Metrics` with its own ``CollectorRegistry`` (never the
process-global one), so several apps can live in one test process. Deadline
statistics are not counted twice: a collector reads the live scope table at
scrape time. Other layers register their own collectors with :meth:`Metrics.add_collector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._deadlines import DeadlineTable, current_deadlines

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _DeadlineCollector(Collector):
    def __init__(self, table: Callable[[], DeadlineTable]) -> None:
        self._table = table

    def collect(self) -> Iterable[Metric]:
        budget = GaugeMetricFamily(
            "autobot_deadline_budget_seconds", "Budget of each deadline scope", labels=["scope"]
        )
        count = CounterMetricFamily(
            "autobot_deadline_observations", "Blocks run under each scope", labels=["scope"]
        )
        expired = CounterMetricFamily(
            "autobot_deadline_expired", "Blocks whose scope expired", labels=["scope"]
        )
        quantiles = GaugeMetricFamily(
            "autobot_deadline_latency_seconds",
            "Observed latency quantiles per scope",
            labels=["scope", "quantile"],
        )
        for name, stats in self._table().snapshot().items():
            budget.add_metric([name], stats["budget_s"])
            count.add_metric([name], stats["count"])
            expired.add_metric([name], stats["expired"])
            quantiles.add_metric([name, "0.5"], stats["p50_s"])
            quantiles.add_metric([name, "0.99"], stats["p99_s"])
        yield from (budget, count, expired, quantiles)


class Metrics:
    """The metrics one app exposes at ``/api/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "autobot_http_requests",
            "HTTP requests and WebSocket sessions handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "autobot_http_request_duration_seconds",
            "Time from request start to the end of the response",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DeadlineCollector(current_deadlines))

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
