"""/api/health: concurrent, bounded checks and the contract's status rules."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import trio
import trio.testing

from autobot import Settings, run_health_checks
from autobot.api import create_app


class HangingCheck:
    name = "hangs"
    critical = False

    async def check(self) -> None:
        await trio.sleep_forever()


class SlowCheck:
    critical = False

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds

    async def check(self) -> dict[str, str]:
        await trio.sleep(self.seconds)
        return {"detail": f"took {self.seconds}"}


class FailingCheck:
    def __init__(self, name: str, *, critical: bool) -> None:
        self.name = name
        self.critical = critical

    async def check(self) -> None:
        raise ConnectionRefusedError("nobody home")


async def test_checks_run_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    report = await run_health_checks(
        [SlowCheck("a", 0.2), SlowCheck("b", 0.2), SlowCheck("c", 0.2)]
    )
    assert trio.current_time() - started == pytest.approx(0.2)
    assert report.status == "ok"
    assert report.http_status == 200
    assert report.checks["a"] == {
        "ok": True,
        "detail": "took 0.2",
        "latency_ms": 200.0,
        "age_ms": 0.0,
    }


async def test_non_critical_failure_is_degraded(autojump_clock: trio.testing.MockClock) -> None:
    report = await run_health_checks([SlowCheck("a", 0.1), FailingCheck("redis", critical=False)])
    assert report.status == "degraded"
    assert report.http_status == 200
    assert report.checks["redis"]["ok"] is False
    assert report.checks["redis"]["error"] == "ConnectionRefusedError: nobody home"


async def test_critical_failure_is_down(autojump_clock: trio.testing.MockClock) -> None:
    report = await run_health_checks(
        [FailingCheck("storage", critical=True), FailingCheck("llm", critical=False)]
    )
    assert report.status == "down"
    assert report.http_status == 503


async def test_health_route_answers_in_time_when_a_check_hangs(settings: Settings) -> None:
    # The app touches the disk and the network, so this runs on real time, with budgets
    # shortened to keep it quick; the runner's timing is covered on a mock clock above.
    settings = dataclasses.replace(settings, deadlines={"health": 0.4, "health.check": 0.2})
    app = create_app(settings, extra_health_checks=[HangingCheck()])
    async with app.test_app() as test_app:
        client = test_app.test_client()
        started = trio.current_time()
        response = await client.get("/api/health")
        elapsed = trio.current_time() - started
        body = await response.get_json()
    assert response.status_code == 200
    assert 0.2 <= elapsed < 0.4  # the check's bound, within the health deadline
    assert body["status"] == "degraded"
    hung = body["checks"]["hangs"]
    assert hung["ok"] is False
    assert hung["error"] == "deadline 'health.check' expired after 0.2 s"
    assert 200 <= hung["latency_ms"] < 400
    assert body["checks"]["storage"]["ok"] is True
    assert set(body["checks"]) == {"storage", "journal", "llm", "services", "knowledge", "hangs"}


async def test_unusable_data_dir_is_down_with_503(
    tmp_path: pathlib.Path, settings: Settings
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("occupied")
    app = create_app(dataclasses.replace(settings, data_dir=not_a_dir))
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/api/health")
        body = await response.get_json()
    assert response.status_code == 503
    assert body["status"] == "down"
    assert body["checks"]["storage"]["ok"] is False
    assert "Not a directory" in body["checks"]["storage"]["error"]


async def test_unreachable_llm_is_degraded(settings: Settings) -> None:
    app = create_app(settings)
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/api/health")
        body = await response.get_json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["checks"]["llm"]["ok"] is False
    assert body["checks"]["llm"]["error"].startswith("cannot reach ollama at http://127.0.0.1:")
