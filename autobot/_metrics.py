"""Prometheus metrics for one app: requests, latencies and the deadline table.

Each app owns a :class:`Metrics` with its own ``CollectorRegistry`` (never the
process-global one), so several apps can live in one test process. Deadline
statistics are not counted twice: a collector reads the live scope table at
scrape time. Other layers register their own collectors with :meth:`Metrics.add_collector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

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


class _BreakerCollector(Collector):
    """Circuit breakers of the dependencies, read at scrape time."""

    def __init__(self, snapshots: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterable[Metric]:
        labels = ["dependency", "target"]
        is_open = GaugeMetricFamily(
            "autobot_breaker_open", "1 while the circuit is open or half-open", labels=labels
        )
        failures = CounterMetricFamily(
            "autobot_breaker_failures", "Failures counted by the breaker", labels=labels
        )
        rejected = CounterMetricFamily(
            "autobot_breaker_rejected", "Calls refused while the circuit was open", labels=labels
        )
        for snapshot in self._snapshots():
            key = [snapshot["dependency"], snapshot.get("target", "")]
            is_open.add_metric(key, 0 if snapshot["state"] == "closed" else 1)
            failures.add_metric(key, snapshot["total_failures"])
            rejected.add_metric(key, snapshot["rejected"])
        yield from (is_open, failures, rejected)


class _SupervisionCollector(Collector):
    """Supervised services, dropped payloads and health probes, read at scrape time."""

    def __init__(
        self,
        services: Callable[[], Iterable[Any]],
        dropped: Callable[[], Mapping[tuple[str, str], int]],
        probes: Callable[[], Mapping[str, int]],
    ) -> None:
        self._services = services
        self._dropped = dropped
        self._probes = probes

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "autobot_service_up", "1 while a supervised service is ready", labels=["service"]
        )
        restarts = CounterMetricFamily(
            "autobot_service_restarts",
            "Restarts of a supervised service after a recoverable failure",
            labels=["service"],
        )
        for state in self._services():
            up.add_metric([state.name], 1 if state.status == "up" else 0)
            restarts.add_metric([state.name], state.restarts)
        dropped = CounterMetricFamily(
            "autobot_dropped_payloads",
            "Bad payloads from outside that a background task dropped",
            labels=["source", "reason"],
        )
        for (source, reason), count in self._dropped().items():
            dropped.add_metric([source, reason], count)
        probes = CounterMetricFamily(
            "autobot_health_probes", "Health probes run, by check", labels=["check"]
        )
        for check, count in self._probes().items():
            probes.add_metric([check], count)
        yield from (up, restarts, dropped, probes)


class _OperationsCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "autobot_operations",
            "Operations this process holds, by state (queued here or running here)",
            labels=["state"],
        )
        for state, count in self._counts().items():
            gauge.add_metric([state], count)
        yield gauge


class _AgentMessagesCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        messages = CounterMetricFamily(
            "autobot_agent_messages",
            "Agent bus messages of this process: sent, delivered, expired (dropped, never "
            "delivered), handed_back (taken for a receiver that left), malformed",
            labels=["event"],
        )
        for event, count in self._counts().items():
            messages.add_metric([event], count)
        yield messages


def _token_counts(stats: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens as the provider reported them, if it did."""
    if "eval_count" in stats or "prompt_eval_count" in stats:  # Ollama
        return stats.get("prompt_eval_count"), stats.get("eval_count")
    usage = stats.get("usage") or {}  # OpenAI-compatible servers, when they send usage
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


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
        self.answers = Counter(
            "autobot_chat_answers",
            "Answers finished, by how they ended",
            ["status"],
            registry=self.registry,
        )
        self.answer_characters = Counter(
            "autobot_chat_answer_characters",
            "Characters of answer text streamed",
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "autobot_llm_tokens",
            "Tokens the LLM reported using",
            ["kind"],
            registry=self.registry,
        )
        self.operation_runs = Counter(
            "autobot_operation_runs",
            "Runs of long-running operations in this process, by type and how they ended "
            "(a finished status, or interrupted by shutdown, or lease_lost)",
            ["type", "status"],
            registry=self.registry,
        )
        self.registry.register(_DeadlineCollector(current_deadlines))

    def watch_breakers(self, snapshots: Callable[[], list[dict[str, Any]]]) -> None:
        """Export the breakers ``snapshots()`` describes (each with ``dependency``, ``target``)."""
        self.registry.register(_BreakerCollector(snapshots))

    def watch_supervision(
        self,
        services: Callable[[], Iterable[Any]],
        dropped: Callable[[], Mapping[tuple[str, str], int]],
        probes: Callable[[], Mapping[str, int]],
    ) -> None:
        """Export supervised services (each with ``name``, ``status``, ``restarts``),
        dropped payloads by (source, reason) and health probes by check."""
        self.registry.register(_SupervisionCollector(services, dropped, probes))

    def answer_finished(self, status: str, characters: int, stats: Mapping[str, Any]) -> None:
        """Count one answer of the chat workflow (``stats``: what the provider reported)."""
        self.answers.labels(status).inc()
        self.answer_characters.inc(characters)
        prompt, completion = _token_counts(stats)
        if prompt:
            self.llm_tokens.labels("prompt").inc(prompt)
        if completion:
            self.llm_tokens.labels("completion").inc(completion)

    def watch_operations(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export this process's operation queue: ``counts()`` maps queued/running to numbers."""
        self.registry.register(_OperationsCollector(counts))

    def watch_agents(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export the bus's message counts: ``counts()`` maps an event to a running total."""
        self.registry.register(_AgentMessagesCollector(counts))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
