"""Named deadline scopes, driven by a mock clock."""

from __future__ import annotations

import ast
import pathlib

import pytest
import trio
import trio.testing

import autobot
from autobot import (
    SCOPES,
    DeadlineExceeded,
    DeadlineTable,
    UnknownDeadlineScope,
    current_deadlines,
    deadline,
    load_settings,
)
from autobot._latency import LatencySummary


async def test_scope_expires_exactly_at_its_budget(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        with deadline("redis.command"):
            await trio.sleep_forever()
    assert trio.current_time() - started == pytest.approx(2.0)
    assert caught.value.scope == "redis.command"
    assert caught.value.deadline_s == 2.0


async def test_block_that_finishes_in_time_is_untouched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with deadline("redis.command") as scope:
        await trio.sleep(1.999)
    assert not scope.cancelled_caught


async def test_expired_error_is_typed_and_carries_the_contract_fields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(DeadlineExceeded) as caught:
        with deadline("health"):
            await trio.sleep_forever()
    error = caught.value
    assert isinstance(error, autobot.AutoBotError)
    assert isinstance(error, trio.TooSlowError)
    assert error.status == 504
    assert error.to_body() == {
        "error": {
            "code": "deadline_exceeded",
            "message": "deadline 'health' expired after 2 s",
            "scope": "health",
            "deadline_s": 2.0,
        }
    }


async def test_inner_scope_cannot_outlive_outer(autojump_clock: trio.testing.MockClock) -> None:
    # llm.first_token (120 s) inside redis.connect (1 s): the outer one fires first, named.
    started = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        with deadline("redis.connect"):
            with deadline("llm.first_token"):
                await trio.sleep_forever()
    assert caught.value.scope == "redis.connect"
    assert trio.current_time() - started == pytest.approx(1.0)


async def test_inner_scope_shorter_than_outer_fires_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with deadline("llm.total"):
        with pytest.raises(DeadlineExceeded) as caught:
            with deadline("llm.idle"):
                await trio.sleep_forever()
        assert caught.value.scope == "llm.idle"
        # The outer scope still has its own budget left and keeps running.
        await trio.sleep(1)


async def test_outer_expiry_is_not_counted_against_the_inner_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(DeadlineExceeded):
        with deadline("redis.connect"):
            with deadline("llm.first_token"):
                await trio.sleep_forever()
    table = current_deadlines()
    assert table["redis.connect"].histogram.expired == 1
    assert table["llm.first_token"].histogram.count == 0


async def test_early_cancel_by_the_caller_is_not_an_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with deadline("llm.total") as scope:
        scope.cancel()
        await trio.sleep(1)
    assert scope.cancelled_caught
    assert current_deadlines()["llm.total"].histogram.expired == 0


async def test_latency_is_recorded_for_successes_failures_and_expiries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for seconds in (0.1, 0.2, 0.3):
        with deadline("file.io"):
            await trio.sleep(seconds)
    with pytest.raises(ValueError):
        with deadline("file.io"):
            await trio.sleep(0.4)
            raise ValueError("a failed operation still took its time")
    with pytest.raises(DeadlineExceeded):
        with deadline("file.io"):
            await trio.sleep_forever()
    stats = current_deadlines()["file.io"].stats()
    assert stats["count"] == 5
    assert stats["expired"] == 1
    assert stats["max_s"] == pytest.approx(10.0)
    # p50 is the third of five observations (0.3 s), read from a 19 % wide bucket.
    assert 0.3 <= stats["p50_s"] <= 0.3 * 1.19


def test_unknown_scope_is_a_programming_error() -> None:
    with pytest.raises(UnknownDeadlineScope):
        with deadline("redis.comand"):
            pass


def _deadline_names_used_in_package() -> set[tuple[str, str]]:
    root = pathlib.Path(autobot.__file__).parent
    used = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "deadline"
                and node.args
            ):
                argument = node.args[0]
                assert isinstance(argument, ast.Constant), (
                    f"{path}:{node.lineno}: deadline() takes a literal scope name"
                )
                used.add((f"{path.name}:{node.lineno}", argument.value))
    return used


def test_every_scope_named_in_the_code_is_in_the_table() -> None:
    used = _deadline_names_used_in_package()
    assert used, "the scan found no deadline() calls at all"
    unknown = {(where, name) for where, name in used if name not in current_deadlines()}
    assert not unknown


def test_contract_scopes_and_defaults() -> None:
    defaults = {spec.name: spec.default_s for spec in SCOPES}
    assert (
        defaults
        | {
            "redis.connect": 1,
            "redis.command": 2,
            "llm.connect": 5,
            "llm.first_token": 120,
            "llm.idle": 30,
            "llm.total": 600,
            "file.io": 10,
            "kb.search": 10,
            "health": 2,
            "http.request": 30,
        }
        == defaults
    )


def test_environment_overrides_one_scope() -> None:
    settings = load_settings({"AUTOBOT_DEADLINE_LLM_IDLE": "45", "AUTOBOT_DEADLINE_FILE_IO": "0.5"})
    table = settings.deadline_table()
    assert table.budget("llm.idle") == 45
    assert table.budget("file.io") == 0.5
    assert table.budget("llm.total") == 600


def test_toml_overrides_and_environment_wins(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "autobot.toml"
    config.write_text('[deadlines]\n"llm.idle" = 60\n"redis.command" = 0.25\n')
    settings = load_settings({"AUTOBOT_CONFIG": str(config), "AUTOBOT_DEADLINE_REDIS_COMMAND": "3"})
    table = settings.deadline_table()
    assert table.budget("llm.idle") == 60
    assert table.budget("redis.command") == 3


async def test_overridden_budget_is_the_one_enforced(
    autojump_clock: trio.testing.MockClock, set_deadlines
) -> None:
    set_deadlines({"redis.command": 0.25})
    started = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        with deadline("redis.command"):
            await trio.sleep_forever()
    assert caught.value.deadline_s == 0.25
    assert trio.current_time() - started == pytest.approx(0.25)


def test_table_rejects_bad_overrides() -> None:
    with pytest.raises(UnknownDeadlineScope):
        DeadlineTable({"nope": 1})
    with pytest.raises(ValueError):
        DeadlineTable({"llm.idle": 0})
    with pytest.raises(ValueError):
        DeadlineTable({"llm.idle": float("inf")})


def _summary(count: int, expired: int, p99_s: float) -> LatencySummary:
    return LatencySummary(count=count, expired=expired, p50_s=p99_s / 2, p99_s=p99_s, max_s=p99_s)


@pytest.mark.parametrize(
    ("budget", "summary", "suggested"),
    [
        # Too few observations: keep the budget.
        (2.0, _summary(49, 0, 0.01), 2.0),
        # Healthy and far below budget: tighten to 2 x p99.
        (2.0, _summary(1000, 0, 0.0123), 0.025),
        # A slow but healthy tail above half the budget: raise to 2 x p99.
        (2.0, _summary(1000, 5, 1.6), 3.2),
        # More than 1 % expired: at least 1.5 x the budget.
        (2.0, _summary(1000, 20, 0.2), 3.0),
        # Never below 10 ms.
        (2.0, _summary(1000, 0, 0.0001), 0.01),
    ],
)
def test_suggested_budget_rule(budget: float, summary: LatencySummary, suggested: float) -> None:
    assert autobot.suggest_budget(budget, summary) == pytest.approx(suggested)


async def test_suggestion_follows_observed_latencies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for _ in range(99):
        with deadline("redis.command"):
            await trio.sleep(0.001)
    with deadline("redis.command"):
        await trio.sleep(0.5)
    stats = current_deadlines()["redis.command"].stats()
    assert stats["count"] == 100
    # p99 of 100 is the 99th value, a 1 ms one: the single slow outlier does not drag
    # the suggestion up, and 2 s is far more than this scope needs.
    assert stats["p99_s"] < 0.0013
    assert stats["suggested_s"] == pytest.approx(0.01)
