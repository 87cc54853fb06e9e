"""The runner on both real store backends: queues, limits, cancel, resume, adoption."""

from __future__ import annotations

import pytest
import trio

from autobot import NotFound, ValidationFailed
from autobot.operations import OperationPriority
from autobot.storage import Store
from tests.operations.conftest import Journal, RunnerFactory, reaches


async def test_an_operation_runs_to_completion_with_progress_and_a_result(
    start_runner: RunnerFactory,
) -> None:
    runner = await start_runner()
    record = await runner.submit("count_items", {"items": 4})
    assert record["status"] == "queued" and record["attempts"] == 0
    done = await reaches(runner, record["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"sum": 0 + 1 + 2 + 3}
    assert done["attempts"] == 1
    progress = done["progress"]
    assert progress["processed_items"] == progress["total_items"] == 4
    assert progress["progress_percentage"] == 100.0
    assert progress["status_message"] == "completed"
    assert done["started_at"] and done["finished_at"]


async def test_high_priority_runs_first_and_fifo_holds_within_a_priority(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    runner = await start_runner(concurrency=1)
    blocker = await runner.submit("count_items", {"items": 1, "hold": True})
    await journal.until(lambda: blocker["id"] in journal.started)
    submitted = []
    for priority in ("low", "normal", "high", "normal", "low", "high"):
        record = await runner.submit(
            "count_items", {"items": 1}, priority=OperationPriority(priority)
        )
        submitted.append((priority, record["id"]))
    journal.release.set()
    for _, operation_id in submitted:
        await reaches(runner, operation_id)
    expected = [op for p in ("high", "normal", "low") for q, op in submitted if q == p]
    assert journal.started == [blocker["id"], *expected]


async def test_no_more_than_the_concurrency_limit_run_at_once(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    runner = await start_runner(concurrency=2)
    records = [await runner.submit("count_items", {"items": 3, "item_s": 0.02}) for _ in range(6)]
    for record in records:
        assert (await reaches(runner, record["id"]))["status"] == "completed"
    assert journal.most_running == 2


async def test_cancel_stops_a_running_operation_promptly(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    runner = await start_runner()
    record = await runner.submit("count_items", {"items": 1000, "item_s": 0.01})
    await journal.until(lambda: len(journal.finished_items(record["id"])) >= 3)
    with trio.fail_after(1):
        cancelled = await runner.cancel(record["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["checkpoint"]["processed_items"] >= 3
    assert runner.running == []
    with pytest.raises(Exception) as refused:
        await runner.cancel(record["id"])
    assert getattr(refused.value, "code", None) == "operation_finished"


async def test_resume_after_cancel_never_redoes_a_finished_item(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    runner = await start_runner()
    record = await runner.submit("count_items", {"items": 40, "item_s": 0.01})
    await journal.until(lambda: len(journal.finished_items(record["id"])) >= 10)
    await runner.cancel(record["id"])
    done_before = journal.finished_items(record["id"])
    resumed = await runner.resume(record["id"])
    assert resumed["status"] == "queued"
    done = await reaches(runner, record["id"])
    assert done["status"] == "completed"
    finished = journal.finished_items(record["id"])
    assert sorted(finished) == list(range(40)), "every item finished exactly once"
    assert finished[: len(done_before)] == done_before
    assert done["attempts"] == 2
    assert done["result"] == {"sum": sum(range(40))}


async def test_resume_is_refused_unless_the_operation_stopped(start_runner: RunnerFactory) -> None:
    runner = await start_runner()
    record = await runner.submit("count_items", {"items": 1})
    await reaches(runner, record["id"])
    with pytest.raises(Exception) as refused:
        await runner.resume(record["id"])
    assert getattr(refused.value, "code", None) == "operation_not_resumable"
    with pytest.raises(NotFound) as missing:
        await runner.resume("nope")
    assert missing.value.code == "operation_not_found"


async def test_failed_items_below_the_threshold_are_recorded_in_the_result(
    start_runner: RunnerFactory,
) -> None:
    runner = await start_runner()
    record = await runner.submit("count_items", {"items": 6, "fail": [1, 4]})
    done = await reaches(runner, record["id"])
    assert done["status"] == "completed"
    assert done["result"]["failed_items"] == 2
    assert [f["item"] for f in done["result"]["failures"]] == ["item-1", "item-4"]
    assert done["result"]["sum"] == 0 + 2 + 3 + 5


async def test_reaching_the_failure_threshold_fails_the_operation_and_keeps_its_checkpoint(
    start_runner: RunnerFactory,
) -> None:
    runner = await start_runner()
    record = await runner.submit("count_items", {"items": 10, "fail": [2, 5, 7]})
    done = await reaches(runner, record["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "operation_failed"
    assert "3 items failed" in done["error"]["message"]
    assert done["checkpoint"]["processed_items"] == 7


async def test_unknown_type_and_bad_params_are_refused_before_queueing(
    start_runner: RunnerFactory, runner_store: Store
) -> None:
    runner = await start_runner()
    with pytest.raises(ValidationFailed) as unknown:
        await runner.submit("no_such_type")
    assert unknown.value.code == "unknown_operation_type"
    with pytest.raises(ValidationFailed) as bad:
        await runner.submit("count_items", {"items": -1, "colour": "red"})
    fields = {f["field"] for f in bad.value.details["fields"]}
    assert fields == {"params.items", "params.colour"}
    assert await runner_store.list_operations() == []


async def test_shutdown_leaves_a_running_operation_resumable_for_the_next_runner(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    first = await start_runner()
    record = await first.submit("count_items", {"items": 30, "item_s": 0.01})
    await journal.until(lambda: len(journal.finished_items(record["id"])) >= 5)
    await first.shutdown()
    interrupted = await first.get(record["id"])
    assert interrupted["status"] == "queued"
    assert interrupted["checkpoint"]["processed_items"] >= 5
    second = await start_runner()  # adopts on start: the lease was given up
    done = await reaches(second, record["id"])
    assert done["status"] == "completed"
    assert sorted(journal.finished_items(record["id"])) == list(range(30))
    assert done["attempts"] == 2


async def test_list_filters_by_status_and_type(start_runner: RunnerFactory) -> None:
    runner = await start_runner()
    a = await runner.submit("count_items", {"items": 1})
    await reaches(runner, a["id"])
    b = await runner.submit("count_items", {"items": 1000, "item_s": 0.01})
    await reaches(runner, b["id"], "running")
    assert [r["id"] for r in await runner.list(status="completed")] == [a["id"]]
    assert [r["id"] for r in await runner.list(status="running")] == [b["id"]]
    assert [r["id"] for r in await runner.list(type_name="count_items")] == [b["id"], a["id"]]
    assert await runner.list(type_name="security_scan") == []
    await runner.cancel(b["id"])


async def test_types_report_observed_seconds_per_item(start_runner: RunnerFactory) -> None:
    runner = await start_runner()
    (entry,) = [t for t in runner.describe_types() if t["type"] == "count_items"]
    assert "observed" not in entry
    record = await runner.submit("count_items", {"items": 60, "item_s": 0.001})
    await reaches(runner, record["id"])
    (entry,) = [t for t in runner.describe_types() if t["type"] == "count_items"]
    observed = entry["observed"]
    assert observed["items"] == 60
    assert 0.001 <= observed["per_item_p50_s"] <= observed["per_item_p99_s"] < 1
    assert observed["suggested_per_item_s"] < entry["profile"]["per_item_s"]


async def test_a_cancel_sent_to_another_runner_stops_the_operation_there(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    owner = await start_runner()
    other = await start_runner()
    record = await owner.submit("count_items", {"items": 1000, "item_s": 0.01})
    await journal.until(lambda: len(journal.finished_items(record["id"])) >= 2)
    with trio.fail_after(2):
        cancelled = await other.cancel(record["id"])
    assert cancelled["status"] == "cancelled"
    assert owner.running == [] and other.running == []


async def test_a_queued_operation_of_another_runner_is_cancelled_there(
    start_runner: RunnerFactory, journal: Journal
) -> None:
    owner = await start_runner(concurrency=1)
    other = await start_runner()
    blocker = await owner.submit("count_items", {"items": 1, "hold": True})
    waiting = await owner.submit("count_items", {"items": 1})
    await journal.until(lambda: blocker["id"] in journal.started)
    with trio.fail_after(2):
        assert (await other.cancel(waiting["id"]))["status"] == "cancelled"
    journal.release.set()
    assert (await reaches(owner, blocker["id"]))["status"] == "completed"
    assert waiting["id"] not in journal.started
