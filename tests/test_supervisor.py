"""The Supervisor: restarts with backoff, honest reports, programming errors crash."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing

from autobot import RedisUnavailable, StorageUnavailable, run_health_checks
from autobot._metrics import Metrics
from autobot._supervisor import (
    RestartPolicy,
    Supervisor,
    is_recoverable,
    open_supervisor,
    using_supervisor,
)

POLICY = RestartPolicy(first_s=0.1, max_s=1.0, stable_s=5.0)


def full_delay() -> float:
    """Jitter that always picks the top of the range, so delays are exact."""
    return 1.0


class Flaky:
    """A service that fails ``failures`` times with ``error``, then stays up.

    ``ready_for_s`` lets each failing run be ready for a while before failing.
    """

    def __init__(self, failures: int, error: BaseException, *, ready_for_s: float = 0.0) -> None:
        self.left = failures
        self.error = error
        self.ready_for_s = ready_for_s
        self.runs: list[float] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs.append(trio.current_time())
        if self.left > 0:
            self.left -= 1
            if self.ready_for_s:
                task_status.started()
                await trio.sleep(self.ready_for_s)
            raise self.error
        task_status.started()
        await trio.sleep_forever()


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    policy = RestartPolicy(first_s=0.1, max_s=1.0)
    assert [policy.delay(n, 1.0) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert [policy.delay(n, 0.0) for n in (1, 2, 5)] == pytest.approx([0.05, 0.1, 0.5])
    assert policy.delay(10_000, 0.5) == pytest.approx(0.75)  # no overflow after many failures
    with pytest.raises(ValueError):
        RestartPolicy(first_s=2.0, max_s=1.0)


def test_recoverable_errors_are_outside_faults_and_groups_of_them() -> None:
    assert is_recoverable(OSError("disk full"))
    assert is_recoverable(RedisUnavailable("down"))
    assert is_recoverable(trio.BrokenResourceError())
    assert is_recoverable(ExceptionGroup("", [OSError(), StorageUnavailable("x")]))
    assert not is_recoverable(TypeError("bug"))
    assert not is_recoverable(KeyError("bug"))
    assert not is_recoverable(AssertionError())
    assert not is_recoverable(ExceptionGroup("", [OSError(), KeyError("bug")]))


async def test_restarts_with_exponential_backoff(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(5, OSError("No space left on device"))
    async with open_supervisor(random_fraction=full_delay) as supervisor:
        service = await supervisor.start("journal", flaky.run, policy=POLICY)
        # start() returned after the first failure: start-up is not held up.
        assert service.state.status == "restarting"
        assert trio.current_time() == 0
        await trio.sleep(10)
        assert gaps(flaky.runs) == [0.1, 0.2, 0.4, 0.8, 1.0]
        assert service.state.status == "up"
        assert service.state.restarts == 5
        assert service.state.error is None


async def test_a_run_that_stayed_up_resets_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(4, OSError("gone"), ready_for_s=0.0)
    async with open_supervisor(random_fraction=full_delay) as supervisor:
        await supervisor.start("relay", flaky.run, policy=POLICY)
        await trio.sleep(5)
        assert gaps(flaky.runs) == [0.1, 0.2, 0.4, 0.8]

    # Failing after being ready for stable_s or more: each failure is the first again.
    steady = Flaky(3, OSError("gone"), ready_for_s=POLICY.stable_s)
    async with open_supervisor(random_fraction=full_delay) as supervisor:
        await supervisor.start("relay", steady.run, policy=POLICY)
        await trio.sleep(30)
        assert gaps(steady.runs) == [POLICY.stable_s + 0.1] * 3


async def test_health_reports_the_service_down_with_error_and_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(3, OSError("Is a directory"))
    async with open_supervisor(random_fraction=full_delay) as supervisor:
        await supervisor.start("storage.compaction", flaky.run, policy=RestartPolicy(1.0, 1.0))
        await supervisor.start("storage.journal", Flaky(0, OSError()).run, critical=True)
        await trio.sleep(1.5)  # failed twice; one restart done
        report = await run_health_checks([supervisor.health_check])
        entry = report.checks["services"]
        assert report.status == "degraded"  # compaction is not critical
        assert entry["ok"] is False
        assert entry["error"] == (
            "storage.compaction restarting after OSError: Is a directory (1 restarts)"
        )
        assert entry["services"] == {
            "storage.compaction": {
                "status": "restarting",
                "restarts": 1,
                "error": "OSError: Is a directory",
            },
            "storage.journal": {"status": "up", "restarts": 0, "critical": True},
        }
        await trio.sleep(5)
        report = await run_health_checks([supervisor.health_check])
        assert report.status == "ok"
        assert report.checks["services"]["services"]["storage.compaction"] == {
            "status": "up",
            "restarts": 3,
        }


async def test_a_critical_service_down_makes_health_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as supervisor:
        await supervisor.start("storage.journal", Flaky(100, OSError("EIO")).run, critical=True)
        report = await run_health_checks([supervisor.health_check])
        assert report.status == "down"
        assert report.http_status == 503


async def test_metrics_count_restarts_and_show_up(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    async with open_supervisor(random_fraction=full_delay) as supervisor:
        metrics.watch_supervision(supervisor.services, lambda: supervisor.dropped, dict)
        await supervisor.start("relay", Flaky(2, OSError()).run, policy=POLICY)
        await supervisor.start("stuck", Flaky(100, OSError()).run, policy=POLICY)
        await trio.sleep(1)
        supervisor.drop("storage.pubsub", "not_json", channel="x")
        text = metrics.render().decode()
    assert 'autobot_service_up{service="relay"} 1.0' in text
    assert 'autobot_service_up{service="stuck"} 0.0' in text
    assert 'autobot_service_restarts_total{service="relay"} 2.0' in text
    assert 'autobot_dropped_payloads_total{reason="not_json",source="storage.pubsub"} 1.0' in text


async def test_a_programming_error_crashes_loudly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def buggy(  # noqa: ASYNC114 - started by the supervisor
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep(1)
        {}["missing"]  # the bug under test

    bystander_cancelled = False

    async def bystander(  # noqa: ASYNC114 - started by the supervisor
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal bystander_cancelled
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            bystander_cancelled = True

    supervisor: Supervisor | None = None
    with pytest.RaisesGroup(KeyError, flatten_subgroups=True):
        async with open_supervisor() as supervisor:
            await supervisor.start("bystander", bystander)
            await supervisor.start("buggy", buggy)
            await trio.sleep_forever()
    assert bystander_cancelled  # the whole supervisor stopped, not just the one task
    assert supervisor is not None
    assert isinstance(supervisor.fatal_error, KeyError)
    states = {state.name: state.status for state in supervisor.services()}
    assert states == {"bystander": "stopped", "buggy": "crashed"}
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert record.getMessage() == "service crashed: a programming error; the server stops"
    assert record.fields["service"] == "buggy"  # type: ignore[attr-defined]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


async def test_a_programming_error_in_the_first_run_is_raised_by_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def broken(  # noqa: ASYNC114 - started by the supervisor
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        raise TypeError("wrong arguments")

    async with open_supervisor() as supervisor:
        with pytest.raises(TypeError):
            await supervisor.start("broken", broken)
        assert supervisor.services()[0].status == "crashed"


async def test_running_stops_the_service_with_the_block_and_keeps_its_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor(random_fraction=full_delay) as supervisor:
        flaky = Flaky(1, OSError())
        async with supervisor.running("journal", flaky.run, policy=POLICY) as service:
            with pytest.raises(ValueError, match="already running"):
                await supervisor.start("journal", flaky.run)
            await trio.sleep(1)
            assert service.state.status == "up"
        assert service.state.status == "stopped"
        report = await run_health_checks([supervisor.health_check])
        assert report.status == "ok"  # a stopped service is not a failing one
        again = await supervisor.start("journal", Flaky(0, OSError()).run)
        assert again.state is service.state
        assert (again.state.status, again.state.restarts) == ("up", 1)


async def test_outer_cancellation_passes_through(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(1) as scope:
        async with open_supervisor() as supervisor:
            await supervisor.start("forever", Flaky(0, OSError()).run)
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert supervisor.services()[0].status == "stopped"


async def test_drops_are_counted_and_logged_without_flooding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with using_supervisor(None) as supervisor:
        for _ in range(2000):
            supervisor.drop("storage.pubsub", "not_json", channel="x")
    assert supervisor.dropped[("storage.pubsub", "not_json")] == 2000
    logged = [r for r in caplog.records if r.getMessage() == "bad payload dropped"]
    assert len(logged) == 10 + 2  # the first ten, then the 1000th and 2000th
