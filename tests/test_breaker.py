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
        open_error=lambda wait_s: ServiceUnavailable(f"dep is down; next try in {wait_s:.3f} s"),
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
    with pytest.raises(ServiceUnavailable, match=r"next try in 5\.000 s"):
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


def refusal_wait(breaker: CircuitBreaker) -> float:
    """What a refused caller is told to wait (the ``open_error`` argument)."""
    with pytest.raises(ServiceUnavailable) as caught:
        succeed(breaker)
    return float(str(caught.value).rsplit(" ", 2)[-2])


async def test_a_probe_success_closes_the_circuit_before_the_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    for _ in range(3):
        fail(breaker)
    await trio.sleep(0.2)
    assert breaker.state is BreakerState.OPEN
    breaker.record_probe_success()
    assert breaker.state is BreakerState.CLOSED
    succeed(breaker)
    snapshot = breaker.snapshot()
    assert snapshot["closed_by_probe"] == 1 and snapshot["consecutive_failures"] == 0
    # On a closed circuit it changes nothing, not even the failure count.
    fail(breaker)
    breaker.record_probe_success()
    assert breaker.snapshot()["consecutive_failures"] == 1
    assert breaker.snapshot()["closed_by_probe"] == 1


async def test_a_call_probe_overtaken_by_a_probe_success_does_not_reopen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    for _ in range(3):
        fail(breaker)
    await trio.sleep(5)
    started = trio.Event()
    finish = trio.Event()

    async def slow_call_probe() -> None:
        with pytest.raises(Refused):
            with breaker.attempt(is_refused):
                started.set()
                await finish.wait()
                raise Refused

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_call_probe)
        await started.wait()
        breaker.record_probe_success()  # the background probe got an answer meanwhile
        succeed(breaker)
        finish.set()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.times_opened == 1


async def test_no_refused_caller_is_told_to_wait_less_than_probe_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    for _ in range(3):
        fail(breaker)
    assert refusal_wait(breaker) == pytest.approx(5.0)
    await trio.sleep(4.99)
    assert refusal_wait(breaker) == pytest.approx(breaker.probe_retry_s)
    await trio.sleep(0.01)
    probe_started = trio.Event()
    release = trio.Event()

    async def probe() -> None:
        with breaker.attempt(is_refused):
            probe_started.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)  # admitted at once: the cool-down is over
        await probe_started.wait()
        assert refusal_wait(breaker) == pytest.approx(0.1)
        release.set()
    assert breaker.state is BreakerState.CLOSED


async def test_wait_until_open_wakes_a_prober_when_the_circuit_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = make_breaker()
    woke_at: list[float] = []

    async def prober() -> None:
        await breaker.wait_until_open()
        woke_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(prober)
        await trio.sleep(1)
        for _ in range(3):
            fail(breaker)
        opened_at = trio.current_time()
    assert woke_at == [opened_at]
    with trio.move_on_after(1) as scope:
        await breaker.wait_until_open()  # already open: returns at once
    assert not scope.cancelled_caught
    breaker.record_probe_success()
    with trio.move_on_after(1) as scope:
        await breaker.wait_until_open()  # closed again: sleeps
    assert scope.cancelled_caught


def test_probe_retry_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("dep", open_error=ServiceUnavailable, probe_retry_s=0)
