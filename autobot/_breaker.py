"""A circuit breaker: stop calling a dependency that keeps failing, then probe it.

States::

    closed ──N consecutive failures──▶ open ──cool-down elapsed──▶ half_open
      ▲                                  ▲                           │
      └────────── probe succeeded ───────┼──────── probe failed ─────┘

While *open*, :meth:`CircuitBreaker.attempt` raises at once, so callers fail in
microseconds instead of each waiting out a deadline. After the cool-down one
caller is let through as the probe (others keep failing fast until it ends);
its outcome closes or re-opens the circuit.

The breaker is a pure state machine on ``trio.current_time()``: it does no I/O
and can be driven with ``MockClock``. The layer using it decides what counts as
a failure (a refused connection or an expired deadline, not a Redis ``WRONGTYPE``
reply) by the predicate it passes to :meth:`CircuitBreaker.attempt`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one dependency and opens after ``failure_threshold``.

    ``open_error`` builds the exception raised while the circuit is open; it
    receives the seconds left before the next probe.
    """

    def __init__(
        self,
        name: str,
        *,
        open_error: Callable[[float], BaseException],
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._open_error = open_error
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.times_opened = 0
        self.total_failures = 0
        self.rejected = 0

    @property
    def state(self) -> BreakerState:
        """The state now; an open circuit whose cool-down has passed reads as half-open."""
        if (
            self._state is BreakerState.OPEN
            and trio.current_time() - self._opened_at >= self.cooldown_s
        ):
            return BreakerState.HALF_OPEN
        return self._state

    @contextmanager
    def attempt(self, is_failure: Callable[[BaseException], bool]) -> Iterator[None]:
        """Guard one call to the dependency.

        Raises ``open_error`` without running the block while the circuit is
        open, or half-open with a probe already in flight. Otherwise runs the
        block and records its outcome: leaving normally, or with an exception
        for which ``is_failure`` is false, is a success; an exception for which
        it is true is a failure. A cancelled block records nothing, so a probe
        that was cancelled leaves the next caller free to probe.
        """
        state = self.state
        if state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._probe_in_flight
        ):
            self.rejected += 1
            remaining = max(0.0, self.cooldown_s - (trio.current_time() - self._opened_at))
            raise self._open_error(remaining)
        probing = state is BreakerState.HALF_OPEN
        if probing:
            self._probe_in_flight = True
        try:
            yield
        except trio.Cancelled:
            raise
        except BaseException as error:
            if is_failure(error):
                self._record_failure(probing)
            else:
                self._record_success()
            raise
        else:
            self._record_success()
        finally:
            if probing:
                self._probe_in_flight = False

    def record_failure(self) -> None:
        """Count a failure observed outside an :meth:`attempt` block.

        For a dependency whose call outlives the guarded part: an LLM stream is
        guarded by :meth:`attempt` until its first token, and a stall or a
        dropped connection after that is reported here. It counts like a failed
        attempt that was not a probe: it opens a closed circuit at the
        threshold, and never restarts the cool-down of one already open.
        """
        self._record_failure(probing=False)

    def _record_success(self) -> None:
        self._consecutive_failures = 0
        self._state = BreakerState.CLOSED

    def _record_failure(self, probing: bool) -> None:
        self.total_failures += 1
        self._consecutive_failures += 1
        # A call let in before the circuit opened may fail after it did; only a
        # failed probe or the threshold being reached (re)starts the cool-down.
        if probing or (
            self._state is BreakerState.CLOSED
            and self._consecutive_failures >= self.failure_threshold
        ):
            self.times_opened += 1
            self._state = BreakerState.OPEN
            self._opened_at = trio.current_time()

    def snapshot(self) -> dict[str, Any]:
        """State and counters, for health and metrics."""
        return {
            "state": self.state.value,
            "consecutive_failures": self._consecutive_failures,
            "times_opened": self.times_opened,
            "total_failures": self.total_failures,
            "rejected": self.rejected,
        }
