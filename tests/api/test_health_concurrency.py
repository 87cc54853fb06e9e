"""/api/health under load: reused results, one probe per check in flight, on time."""

from __future__ import annotations

import collections
import dataclasses
import math

import pytest
import trio
import trio.lowlevel
import trio.testing

from autobot import Settings
from autobot._health import REUSE_S, HealthProbes, WatchedCheck
from autobot.api import create_app
from tests.support.serving import served


class CountingCheck:
    """Takes ``seconds`` to answer; counts the probes that reached it."""

    critical = False

    def __init__(self, name: str = "counted", seconds: float = 0.5) -> None:
        self.name = name
        self.seconds = seconds
        self.calls = 0

    async def check(self) -> dict[str, int]:
        self.calls += 1
        await trio.sleep(self.seconds)
        return {"call": self.calls}


class HangingCheck:
    name = "hangs"
    critical = False

    def __init__(self) -> None:
        self.calls = 0

    async def check(self) -> None:
        self.calls += 1
        await trio.sleep_forever()


async def test_200_concurrent_requests_all_answer_200_sharing_the_probes(
    settings: Settings,
) -> None:
    app = create_app(settings)
    services = app.extensions["autobot.services"]
    async with served(app) as client:
        statuses: collections.Counter[int] = collections.Counter()

        async def poll() -> None:
            statuses[(await client.get("/api/health")).status_code] += 1

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(poll)
        elapsed = trio.current_time() - started
        metrics = (await client.get("/api/metrics")).text

    assert statuses == {200: 200}
    probes = services.health.probe_counts()
    # One probe per reuse window at most (the 200 requests take a second or two here).
    assert 1 <= probes["storage"] <= math.ceil(elapsed / REUSE_S) + 1
    assert f'autobot_health_probes_total{{check="storage"}} {float(probes["storage"])}' in metrics
    # Each probe wrote a file of its own and removed it.
    assert not [p.name for p in settings.data_dir.iterdir() if p.name.startswith(".health-")]


async def test_a_hanging_check_still_lets_every_request_answer_in_time(
    settings: Settings,
) -> None:
    settings = dataclasses.replace(settings, deadlines={"health": 0.4, "health.check": 0.2})
    hanging = HangingCheck()
    app = create_app(settings, extra_health_checks=[hanging])
    async with served(app) as client:
        timings: list[tuple[float, dict]] = []

        async def poll(delay: float) -> None:
            await trio.sleep(delay)
            started = trio.current_time()
            response = await client.get("/api/health")
            assert response.status_code == 200
            timings.append((trio.current_time() - started, response.json()))

        async with trio.open_nursery() as nursery:
            # Requests that arrive while the probe hangs wait for it, never past their budget.
            for delay in (0.0, 0.05, 0.1, 0.15):
                nursery.start_soon(poll, delay)
    assert len(timings) == 4
    for elapsed, body in timings:
        assert elapsed < 0.4
        assert body["status"] == "degraded"
        hung = body["checks"]["hangs"]
        assert hung["ok"] is False
        assert hung["error"] == "deadline 'health.check' expired after 0.2 s"
    assert hanging.calls == 1  # one probe in flight, shared by all four


async def test_results_are_reused_for_a_second_with_their_age(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probes = HealthProbes()
    check = CountingCheck(seconds=0.125)  # a binary fraction: the ages below add up exactly
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        first = (await probes.report([check])).checks["counted"]
        assert (first["call"], first["age_ms"], first["latency_ms"]) == (1, 0.0, 125.0)
        await trio.sleep(0.4)
        assert (await probes.report([check])).checks["counted"]["age_ms"] == 400.0
        await trio.sleep(0.6)
        reused = (await probes.report([check])).checks["counted"]
        assert (reused["call"], reused["age_ms"]) == (1, 1000.0)  # up to 1 s: still reused
        await trio.sleep(0.001)
        fresh = (await probes.report([check])).checks["counted"]
        assert (fresh["call"], fresh["age_ms"]) == (2, 0.0)
        assert probes.probe_counts() == {"counted": 2}
        nursery.cancel_scope.cancel()


async def test_concurrent_requests_share_the_probe_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probes = HealthProbes()
    check = CountingCheck(seconds=0.2)
    ages: list[float] = []
    oks: list[bool] = []

    async def request(delay: float) -> None:
        await trio.sleep(delay)
        counted = (await probes.report([check])).checks["counted"]
        ages.append(counted["age_ms"])
        oks.append(counted["ok"])

    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        async with trio.open_nursery() as requests:
            for n in range(100):
                requests.start_soon(request, n * 0.0015)  # all within the one probe
        nursery.cancel_scope.cancel()
    assert check.calls == 1
    assert ages == [0.0] * 100  # each waited for the fresh probe
    assert oks == [True] * 100


async def test_a_cancelled_request_does_not_cancel_the_probe_others_wait_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probes = HealthProbes()
    check = CountingCheck(seconds=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        with trio.move_on_after(0.1):
            await probes.report([check])  # the client went away
        report = await probes.report([check])
        assert report.checks["counted"]["ok"] is True
        assert trio.current_time() == pytest.approx(0.2)  # the same probe, not a new one
        assert check.calls == 1
        nursery.cancel_scope.cancel()


async def test_a_changed_fingerprint_means_a_fresh_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures = 0
    check = WatchedCheck(CountingCheck(seconds=0.1), lambda: failures)
    probes = HealthProbes()
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        await probes.report([check])
        assert (await probes.report([check])).checks["counted"]["call"] == 1
        failures += 1  # a request just saw the dependency's breaker count a failure
        asked = trio.current_time()
        news = (await probes.report([check])).checks["counted"]
        # Said at once, without waiting for the probe that checks again.
        assert trio.current_time() == asked
        assert news["ok"] is False
        assert news["error"] == "calls to it failed since its last probe (being probed again)"
        await trio.sleep(0.1)
        assert (await probes.report([check])).checks["counted"]["call"] == 2
        nursery.cancel_scope.cancel()


async def test_a_request_does_not_queue_behind_a_probe_unanswered_for_health_wait(
    autojump_clock: trio.testing.MockClock, set_deadlines
) -> None:
    set_deadlines({"health": 2.0, "health.check": 1.5, "health.wait": 0.5})
    probes = HealthProbes()
    hanging = HangingCheck()
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        # The first request waits for the probe it started, for health.wait.
        first = await probes.report([hanging])
        assert trio.current_time() == pytest.approx(0.5)
        assert first.checks["hangs"]["error"] == (
            "no answer within 0.5 s ('health.wait'); the probe goes on"
        )
        await trio.sleep(0.9)
        asked = trio.current_time()
        late = await probes.report([hanging])
        # The probe has gone unanswered for 1.4 s: the late request does not wait at all.
        assert trio.current_time() == asked
        assert late.status == "degraded"
        assert late.checks["hangs"]["latency_ms"] == 1400.0
        await trio.sleep(0.2)
        # The probe gave up on its own deadline; its failure is reused like any result.
        after = await probes.report([hanging])
        assert after.checks["hangs"]["error"] == "deadline 'health.check' expired after 1.5 s"
        assert hanging.calls == 1
        nursery.cancel_scope.cancel()


async def test_a_critical_check_is_waited_for_up_to_health_check(
    autojump_clock: trio.testing.MockClock, set_deadlines
) -> None:
    set_deadlines({"health": 2.0, "health.check": 1.5, "health.wait": 0.5})
    probes = HealthProbes()
    slow = CountingCheck("storage", seconds=1.0)
    slow.critical = True
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        report = await probes.report([slow])
        assert trio.current_time() == pytest.approx(1.0)
        assert report.status == "ok"
        nursery.cancel_scope.cancel()


async def test_under_steady_polling_the_next_probe_is_ready_before_anyone_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probes = HealthProbes()
    check = CountingCheck(seconds=0.3)
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        await probes.report([check])  # the first probe: nothing to reuse yet
        waits, ages = [], []
        for _ in range(50):
            await trio.sleep(0.1)
            asked = trio.current_time()
            report = await probes.report([check])
            waits.append(trio.current_time() - asked)
            ages.append(report.checks["counted"]["age_ms"])
        assert max(waits) == 0  # always a result young enough, while the next one is probed
        assert max(ages) <= REUSE_S * 1000
        assert 6 <= check.calls <= 8  # one probe every REFRESH_S + its own 0.3 s: 5 s / 0.8 s
        nursery.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_a_check_that_failed_is_reported_at_once_while_probed_again(
    autojump_clock: trio.testing.MockClock, set_deadlines
) -> None:
    set_deadlines({"health": 2.0, "health.check": 1.5, "health.wait": 0.5})
    probes = HealthProbes()
    hanging = HangingCheck()
    async with trio.open_nursery() as nursery:
        await nursery.start(probes.run)
        await trio.lowlevel.checkpoint()
        nursery.start_soon(probes.report, [hanging])
        await trio.sleep(1.5 + REUSE_S + 0.1)  # the probe failed and its result expired
        asked = trio.current_time()
        report = await probes.report([hanging])
        assert trio.current_time() == asked
        assert report.checks["hangs"]["error"] == (
            "deadline 'health.check' expired after 1.5 s (being probed again)"
        )
        assert hanging.calls == 2  # and a new probe is on its way
        nursery.cancel_scope.cancel()
