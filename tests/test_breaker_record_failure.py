"""``CircuitBreaker.record_failure``: failures seen after the guarded part of a call."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from autobot import BreakerState, CircuitBreaker


class Open(Exception):
    pass


def breaker() -> CircuitBreaker:
    return CircuitBreaker("dep", open_error=lambda _: Open(), failure_threshold=2, cooldown_s=5)


async def test_record_failure_opens_at_the_threshold(mock_clock: trio.testing.MockClock) -> None:
    circuit = breaker()
    circuit.record_failure()
    assert circuit.state is BreakerState.CLOSED
    circuit.record_failure()
    assert circuit.state is BreakerState.OPEN
    with pytest.raises(Open), circuit.attempt(lambda _: True):
        pass  # pragma: no cover
    assert circuit.snapshot()["total_failures"] == 2


async def test_success_in_between_resets_the_count(mock_clock: trio.testing.MockClock) -> None:
    circuit = breaker()
    circuit.record_failure()
    with circuit.attempt(lambda _: True):
        pass
    circuit.record_failure()
    assert circuit.state is BreakerState.CLOSED


async def test_record_failure_does_not_restart_an_open_cooldown(
    mock_clock: trio.testing.MockClock,
) -> None:
    circuit = breaker()
    circuit.record_failure()
    circuit.record_failure()
    mock_clock.jump(4)
    circuit.record_failure()  # a stream that began before the circuit opened
    mock_clock.jump(1)
    assert circuit.state is BreakerState.HALF_OPEN
    assert circuit.times_opened == 1
