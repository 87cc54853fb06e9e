"""The circuit breaker's state machine, on a mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from autobot import BreakerState, CircuitBreaker, ServiceUnavailable


class Refused(Exception):
    pass


def make_breaker() -> CircuitBreaker:
    return CircuitBreaker(
        "dep",
        open_error=lambda wait_s: ServiceUnavailable(f"dep is down; next try in {wait_s:.1f} s"),
        failure_threshold=3,
        cooldown_s=5.0,
    )


def is_refused(error: BaseException) -> bool:
    return isinstance(error, Refused)


def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(Refused):
        with breaker.attempt(is_refused):
            raise Refused


def succeed(breaker: CircuitBreaker) -> None:
    with breaker.attempt(is_refused):
        pass


async def test_opens_after_threshold_consecutive_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    fail(breaker)
    fail(breaker)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    ran = False
    with pytest.raises(ServiceUnavailable, match=r"next try in 5\.0 s"):
        with breaker.attempt(is_refused):
            ran = True
    assert not ran
    assert breaker.snapshot()["rejected"] == 1


async def test_success_resets_the_count(autojump_clock: trio.testing.MockClock) -> None:
    breaker = make_breaker()
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state is BreakerState.CLOSED


async def test_errors_that_are_not_failures_count_as_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    fail(breaker)
    fail(breaker)
    with pytest.raises(KeyError):
        with breaker.attempt(is_refused):
            raise KeyError("an answer the dependency gave is not an outage")
    fail(breaker)
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_after_cooldown_lets_one_probe_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    for _ in range(3):
        fail(breaker)
    await trio.sleep(4.9)
    assert breaker.state is BreakerState.OPEN
    await trio.sleep(0.1)
    assert breaker.state is BreakerState.HALF_OPEN

    probe_started = trio.Event()
    release_probe = trio.Event()

    async def probe() -> None:
        with breaker.attempt(is_refused):
            probe_started.set()
            await release_probe.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await probe_started.wait()
        with pytest.raises(ServiceUnavailable):
            succeed(breaker)  # a second caller while the probe is out fails fast
        release_probe.set()
    assert breaker.state is BreakerState.CLOSED


async def test_failed_probe_reopens_for_a_full_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    for _ in range(3):
        fail(breaker)
    await trio.sleep(5)
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert breaker.times_opened == 2
    await trio.sleep(4.9)
    assert breaker.state is BreakerState.OPEN
    await trio.sleep(0.1)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_cancelled_probe_frees_the_slot(autojump_clock: trio.testing.MockClock) -> None:
    breaker = make_breaker()
    for _ in range(3):
        fail(breaker)
    await trio.sleep(5)
    with trio.move_on_after(1):
        with breaker.attempt(is_refused):
            await trio.sleep_forever()
    assert breaker.state is BreakerState.HALF_OPEN
    succeed(breaker)
    assert breaker.state is BreakerState.CLOSED


async def test_late_failures_of_calls_admitted_earlier_do_not_extend_the_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    gates = [trio.Event() for _ in range(4)]

    async def slow_failure(gate: trio.Event) -> None:
        with pytest.raises(Refused):
            with breaker.attempt(is_refused):
                await gate.wait()
                raise Refused

    async with trio.open_nursery() as nursery:
        for gate in gates:
            nursery.start_soon(slow_failure, gate)
        await trio.lowlevel.checkpoint()
        for gate in gates[:3]:
            gate.set()
        await trio.sleep(1)
        assert breaker.state is BreakerState.OPEN
        gates[3].set()
    await trio.sleep(4)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.times_opened == 1
