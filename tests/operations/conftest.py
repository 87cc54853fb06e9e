"""Operation types made for the runner's tests, and a runner over a real store."""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from pydantic import BaseModel, ConfigDict, Field

from autobot import Settings
from autobot.operations import (
    OperationContext,
    OperationRegistry,
    OperationRunner,
    OperationStatus,
    TimeoutProfile,
    run_operation,
)
from autobot.storage import Store, open_embedded_store
from tests.support.polling import eventually
from tests.support.stores import BACKENDS, backend_store

PROFILE = TimeoutProfile(
    base_s=60.0,
    per_item_s=5.0,
    max_s=600.0,
    checkpoint_interval_s=0.05,
    progress_interval_s=0.0,
    failure_threshold=3,
)


class Work(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: int = Field(default=5, ge=0, le=10_000)
    item_s: float = Field(default=0.0, ge=0)
    fail: list[int] = []
    hold: bool = False  # wait for the test to let the first item go


class Journal:
    """What the test types did, for the tests to count: the run order and finished items."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[tuple[str, int]] = []
        self.running = 0
        self.most_running = 0
        self.release = trio.Event()
        self._changed = trio.Event()

    def note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def finished_items(self, operation_id: str) -> list[int]:
        return [item for op, item in self.finished if op == operation_id]

    async def until(self, condition: Callable[[], bool], timeout_s: float = 5) -> None:
        """Wait until ``condition()`` holds after something the test types did."""
        with trio.fail_after(timeout_s):
            while not condition():
                await self._changed.wait()


def make_types(journal: Journal) -> OperationRegistry:
    types = OperationRegistry()

    @types.register("count_items", params=Work, profile=PROFILE)
    async def count_items(ctx: OperationContext, params: Work) -> dict[str, Any]:
        """Process ``items`` items of ``item_s`` seconds each; fail the ones in ``fail``."""
        journal.started.append(ctx.id)
        journal.note()
        journal.running += 1
        journal.most_running = max(journal.most_running, journal.running)
        try:
            if params.hold:
                await journal.release.wait()
            state = ctx.resume_state or {"next": 0, "sum": 0}
            ctx.progress(total=params.items, step="counting")
            for index in range(state["next"], params.items):
                async with ctx.item(f"item-{index}") as outcome:
                    await trio.sleep(params.item_s)
                    if index in params.fail:
                        raise ValueError(f"item {index} is broken")
                if outcome.ok:
                    journal.finished.append((ctx.id, index))
                    journal.note()
                    state["sum"] += index
                state["next"] = index + 1
                await ctx.checkpoint(state, processed_items=index + 1)
            return {"sum": state["sum"]}
        finally:
            journal.running -= 1

    return types


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture(params=BACKENDS)
async def runner_store(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[Store]:
    async with backend_store(request, tmp_path) as opened:
        yield opened


RunnerFactory = Callable[..., Any]


@pytest.fixture
def start_runner(
    runner_store: Store, journal: Journal, tmp_path: pathlib.Path, nursery: trio.Nursery
) -> RunnerFactory:
    """``await start_runner(concurrency=1)``: a runner of the test types, running."""

    async def start(concurrency: int = 3, **settings: Any) -> OperationRunner:
        runner = OperationRunner(
            Settings(data_dir=tmp_path, operations_concurrency=concurrency, **settings),
            lambda: runner_store,
            types=make_types(journal),
        )
        await nursery.start(runner.run)
        return runner

    return start


async def reaches(
    runner: OperationRunner, operation_id: str, *statuses: str, timeout_s: float = 10
) -> dict[str, Any]:
    """Wait until the operation has one of ``statuses`` (default: any finished one)."""
    wanted = statuses or ("completed", "failed", "cancelled", "timed_out")

    async def check() -> dict[str, Any] | None:
        record = await runner.get(operation_id)
        return record if record["status"] in wanted else None

    with trio.fail_after(timeout_s):
        return await eventually(check)


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    """An embedded store for the tests of the built-in types."""
    async with open_embedded_store(tmp_path / "store") as embedded:
        yield embedded


def write_tree(root: pathlib.Path, files: dict[str, str]) -> None:
    """Write ``{relative path: text}`` under ``root`` (texts dedented)."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


async def interrupted(
    type_name: str,
    params: dict[str, Any],
    settings: Settings,
    store: Store,
    *,
    after: int,
    before_cancel: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run a type until it has processed ``after`` items, cancel it, return its checkpoint.

    The checkpoint is what the runner saves when an operation is cancelled:
    the state of the last call to ``checkpoint``. ``before_cancel`` is called
    once, at the moment of cancelling, to look at what the operation left so far.
    """
    looked = False

    def stop(ctx: OperationContext) -> bool:
        nonlocal looked
        if ctx.processed_items < after:
            return False
        if before_cancel is not None and not looked:
            looked = True
            before_cancel()
        return True

    run = await run_operation(type_name, params, settings=settings, store=store, stop_when=stop)
    assert run.outcome.status is OperationStatus.CANCELLED, "it finished before the interruption"
    assert run.checkpoint is not None and run.checkpoint["processed_items"] == after
    return run.checkpoint
