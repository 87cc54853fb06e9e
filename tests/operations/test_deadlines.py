"""An operation's deadline and item budgets, on a mock clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from pydantic import BaseModel

from autobot import DeadlineTable, Settings
from autobot.operations import (
    OperationContext,
    OperationRegistry,
    OperationStatus,
    TimeoutProfile,
    run_operation,
)

PROFILE = TimeoutProfile(
    base_s=10.0,
    per_item_s=2.0,
    max_s=100.0,
    checkpoint_interval_s=5.0,
    progress_interval_s=1.0,
    failure_threshold=2,
)


class Slow(BaseModel):
    items: int
    item_s: float = 1.0
    total: int | None = None
    heartbeat_every_s: float | None = None


def slow_types() -> OperationRegistry:
    types = OperationRegistry()

    @types.register("slow", params=Slow, profile=PROFILE)
    async def slow(ctx: OperationContext, params: Slow) -> dict[str, Any]:
        """Items that take ``item_s`` each, with optional heartbeats inside one."""
        state = ctx.resume_state or {"next": 0}
        if params.total is not None:
            ctx.progress(total=params.total)
        for index in range(state["next"], params.items):
            async with ctx.item(str(index)):
                if params.heartbeat_every_s is None:
                    await trio.sleep(params.item_s)
                else:
                    waited = 0.0
                    while waited < params.item_s:
                        await trio.sleep(params.heartbeat_every_s)
                        waited += params.heartbeat_every_s
                        await ctx.heartbeat()
            state["next"] = index + 1
            await ctx.checkpoint(state, processed_items=index + 1)
        return {"done": state["next"]}

    return types


def test_the_deadline_follows_the_contract_formula() -> None:
    assert PROFILE.deadline_s(None) == 10.0
    assert PROFILE.deadline_s(0) == 10.0
    assert PROFILE.deadline_s(20) == 10.0 + 2.0 * 20
    assert PROFILE.deadline_s(1000) == 100.0  # capped by max_s


def test_a_profile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="base_s"):
        TimeoutProfile(200.0, 1.0, 100.0, 1.0, 1.0, 1)
    with pytest.raises(ValueError, match="failure_threshold"):
        TimeoutProfile(1.0, 1.0, 100.0, 1.0, 1.0, 0)
    with pytest.raises(ValueError, match="per_item_s"):
        TimeoutProfile(1.0, float("nan"), 100.0, 1.0, 1.0, 1)


async def run(params: dict[str, Any], **kwargs: Any) -> Any:
    return await run_operation("slow", params, settings=Settings(), types=slow_types(), **kwargs)


async def test_expiry_ends_timed_out_and_keeps_the_last_checkpoint(
    autojump_clock: trio.testing.MockClock, fresh_deadlines: DeadlineTable
) -> None:
    start = trio.current_time()
    local = await run({"items": 50, "item_s": 1.0}, estimated_items=5)
    assert local.outcome.status is OperationStatus.TIMED_OUT
    assert trio.current_time() - start == pytest.approx(10.0 + 2.0 * 5)
    assert local.outcome.error["scope"] == "operation.run"
    assert local.outcome.error["deadline_s"] == 20.0
    # Items 0..18 finished before the deadline; the last state is kept whole.
    assert local.checkpoint["state"] == {"next": 19}
    assert local.checkpoint["processed_items"] == 19
    assert fresh_deadlines["operation.run"].histogram.summary().expired == 1


async def test_a_resume_from_the_kept_checkpoint_finishes_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = await run({"items": 30, "item_s": 1.0}, estimated_items=0)
    assert first.outcome.status is OperationStatus.TIMED_OUT
    assert first.checkpoint["state"] == {"next": 9}
    second = await run(
        {"items": 30, "item_s": 1.0}, estimated_items=30, checkpoint=first.checkpoint
    )
    assert second.outcome.status is OperationStatus.COMPLETED
    assert second.outcome.result == {"done": 30}
    assert second.context.processed_items == 30


async def test_a_known_total_stretches_the_deadline_within_max_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    local = await run({"items": 20, "item_s": 1.0, "total": 20})
    assert local.outcome.status is OperationStatus.COMPLETED
    assert local.context.deadline_s == 10.0 + 2.0 * 20
    capped = await run({"items": 500, "item_s": 1.0, "total": 500})
    assert capped.outcome.status is OperationStatus.TIMED_OUT
    assert capped.context.deadline_s == 100.0
    assert trio.current_time() - start == pytest.approx(20.0 + 100.0)


async def test_an_item_over_its_budget_fails_and_the_threshold_fails_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    local = await run({"items": 5, "item_s": 3.0})
    assert local.outcome.status is OperationStatus.FAILED
    assert local.outcome.error["code"] == "operation_failed"
    assert local.outcome.result["failed_items"] == 2
    assert "operation.item" in local.outcome.result["failures"][0]["error"]


async def test_heartbeats_keep_a_long_item_alive(autojump_clock: trio.testing.MockClock) -> None:
    local = await run({"items": 2, "item_s": 9.0, "heartbeat_every_s": 1.0}, estimated_items=10)
    assert local.outcome.status is OperationStatus.COMPLETED
    assert local.context.failed_count == 0


async def test_checkpoints_are_saved_at_most_once_per_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    saved: list[int] = []

    async def save(record: dict[str, Any]) -> None:
        saved.append(record["processed_items"])

    ctx = OperationContext(
        operation_id="x",
        type_name="slow",
        profile=PROFILE,
        checkpoint_every_item=False,
        settings=Settings(),
        store=None,  # type: ignore[arg-type]
        save_checkpoint=save,
    )
    for index in range(12):
        await trio.sleep(1.0)
        await ctx.checkpoint({"next": index + 1}, processed_items=index + 1)
    assert saved == [5, 10]
    await ctx.flush_checkpoint()  # what a cancel, a shutdown or an expiry saves
    assert saved == [5, 10, 12]


async def test_stop_when_interrupts_at_an_exact_item_and_the_resume_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = await run({"items": 10}, stop_when=lambda ctx: ctx.processed_items >= 3)
    assert first.outcome.status is OperationStatus.CANCELLED
    assert first.checkpoint["processed_items"] == 3
    assert first.checkpoint["state"] == {"next": 3}
    second = await run({"items": 10}, checkpoint=first.checkpoint)
    assert second.outcome.result == {"done": 10}
    assert second.context.resumed_items == 3
