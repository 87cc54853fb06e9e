"""A circuit breaker: stop calling a dependency that keeps failing, then probe it.

States::

    closed ──N consecutive failures──▶ open ──cool-down elapsed──▶ half_open
      ▲                                  ▲                           │
      └────────── probe succeeded ───────┼──────── probe failed ─────┘
      ▲                                  │
      └── record_probe_success() ────────┘  (a background probe, in either state)

While *open*, :meth:`CircuitBreaker.attempt` raises at once, so callers fail in
microseconds instead of each waiting out a deadline. After the cool-down the
next caller is let through at once as the probe (others keep failing fast
until it ends); its outcome closes or re-opens the circuit.

A timer alone makes recovery follow the timer, not the dependency: a
dependency that is back after 0.1 s keeps being refused until the cool-down
ends. A layer that can probe the dependency cheaply in the background (the
Redis client PINGs while the circuit is open) reports an answer with
:meth:`CircuitBreaker.record_probe_success`, which closes the circuit at once;
:meth:`CircuitBreaker.wait_until_open` lets such a prober sleep while the
circuit is closed. The cool-down then only matters when nothing probes.

The breaker is a pure state machine on ``trio.current_time()``: it does no I/O
and can be driven with ``MockClock``. The layer using it decides what counts as
a failure (a refused connection or an expired deadline, not a Redis ``WRONGTYPE``
reply) by the predicate it passes to :meth:`CircuitBreaker.attempt`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from types import TracebackType
from typing import Any

import trio
import trio.lowlevel

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one dependency and opens after ``failure_threshold``.

    ``open_error`` builds the exception raised while the circuit is open; it
    receives the seconds the refused caller should wait before trying again:
    the rest of the cool-down, and never less than ``probe_retry_s``. A caller
    refused while a probe is in flight (the cool-down is over) is told
    ``probe_retry_s``: the probe's outcome is due soon, and no caller is told
    to wait "0.0 s more" by a circuit that still refuses it.
    """

    def __init__(
        self,
        name: str,
        *,
        open_error: Callable[[float], BaseException],
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        probe_retry_s: float = 0.1,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not probe_retry_s > 0:
            raise ValueError("probe_retry_s must be positive")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probe_retry_s = probe_retry_s
        self._open_error = open_error
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        # Bumped when a background probe closes the circuit: a call probe
        # admitted before that is no longer the probe when it ends.
        self._epoch = 0
        self._opened_event: trio.Event | None = None
        self.times_opened = 0
        self.total_failures = 0
        self.rejected = 0
        self.closed_by_probe = 0

    @property
    def state(self) -> BreakerState:
        """The state now; an open circuit whose cool-down has passed reads as half-open."""
        if (
            self._state is BreakerState.OPEN
            and trio.current_time() - self._opened_at >= self.cooldown_s
        ):
            return BreakerState.HALF_OPEN
        return self._state

    def attempt(self, is_failure: Callable[[BaseException], bool]) -> _Attempt:
        """Guard one call to the dependency.

        Raises ``open_error`` without running the block while the circuit is
        open, or half-open with a probe already in flight. Otherwise runs the
        block and records its outcome: leaving normally, or with an exception
        for which ``is_failure`` is false, is a success; an exception for which
        it is true is a failure. A cancelled block records nothing, so a probe
        that was cancelled leaves the next caller free to probe.
        """
        return _Attempt(self, is_failure)

    def _admit(self) -> bool:
        """Let one call through (raising ``open_error`` if not); True if it is the probe."""
        state = self.state
        if state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._probe_in_flight
        ):
            self.rejected += 1
            remaining = self.cooldown_s - (trio.current_time() - self._opened_at)
            raise self._open_error(max(remaining, self.probe_retry_s))
        probing = state is BreakerState.HALF_OPEN
        if probing:
            self._probe_in_flight = True
        return probing

    def _settle(
        self,
        probing: bool,
        epoch: int,
        error: BaseException | None,
        is_failure: Callable[[BaseException], bool],
    ) -> None:
        try:
            if error is None:
                self._record_success()
            elif not isinstance(error, trio.Cancelled):
                if is_failure(error):
                    self._record_failure(probing and epoch == self._epoch)
                else:
                    self._record_success()
        finally:
            if probing and epoch == self._epoch:
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

    def record_probe_success(self) -> None:
        """A probe made outside :meth:`attempt` saw the dependency answer: close now.

        For a layer that probes the dependency in the background while the
        circuit is open (the Redis client PINGs every 0.1 s): its first
        answer closes the circuit at once, from open or half-open, instead of
        leaving callers refused until the cool-down ends. A call probe still
        in flight stops being the probe: if it fails later, that counts like
        any late failure (towards the threshold, not re-opening by itself).
        On a closed circuit this changes nothing; the failure count there is
        the calls' own business. Not a checkpoint.
        """
        if self._state is BreakerState.CLOSED:
            return
        self.closed_by_probe += 1
        self._epoch += 1
        self._probe_in_flight = False
        self._record_success()

    async def wait_until_open(self) -> None:
        """Return once the circuit is open or half-open; at once (a checkpoint) if it is.

        What a background prober sleeps on while the circuit is closed, so it
        costs nothing until there is something to probe. Safe to cancel.
        """
        if self._state is not BreakerState.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        if self._opened_event is None:
            self._opened_event = trio.Event()
        await self._opened_event.wait()

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
            opened, self._opened_event = self._opened_event, None
            if opened is not None:
                opened.set()

    def snapshot(self) -> dict[str, Any]:
        """State and counters, for health and metrics."""
        return {
            "state": self.state.value,
            "consecutive_failures": self._consecutive_failures,
            "times_opened": self.times_opened,
            "total_failures": self.total_failures,
            "rejected": self.rejected,
            "closed_by_probe": self.closed_by_probe,
        }


class _Attempt:
    """One guarded call (:meth:`CircuitBreaker.attempt`): a class, as it wraps every
    Redis command and a generator-based context manager costs more."""

    __slots__ = ("_breaker", "_epoch", "_is_failure", "_probing")

    def __init__(
        self, breaker: CircuitBreaker, is_failure: Callable[[BaseException], bool]
    ) -> None:
        self._breaker = breaker
        self._is_failure = is_failure

    def __enter__(self) -> None:
        self._epoch = self._breaker._epoch
        self._probing = self._breaker._admit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._breaker._settle(self._probing, self._epoch, exc, self._is_failure)
