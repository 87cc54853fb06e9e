"""What an operation's function is given: progress, checkpoints, items, heartbeats.

The function does its work and reports through the context; the runner turns
the reports into stored checkpoints, published progress and the deadline::

    async def run(ctx: OperationContext, params: Params) -> dict[str, Any]:
        state = ctx.resume_state or {"next": 0, "lines": 0}
        files = await list_files(params.path)
        ctx.progress(total=len(files), step="counting lines")
        for index in range(state["next"], len(files)):
            async with ctx.item(files[index]) as item:
                lines = await count_lines(files[index])
            if item.ok:
                state["lines"] += lines
            state["next"] = index + 1
            await ctx.checkpoint(state, processed_items=index + 1)
        return {"lines": state["lines"]}

The one rule a function must keep for resume to be exact: change the state
only between the end of an item and the ``checkpoint`` call that follows it,
with no ``await`` in between. Cancellation in Trio only happens at an
``await``, so the state the runner saves when the operation is cancelled,
shut down or timed out is always the state of the last finished item.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .._deadlines import DeadlinePhase, phased_deadline
from .._errors import AutoBotError, DeadlineExceeded, ServiceUnavailable
from .._health import describe_error
from .._latency import LatencyHistogram
from .._logging import log_fields
from .._operation_profile import TimeoutProfile
from ..files import resolve_client_path
from ..storage import now
from ._model import empty_progress

if TYPE_CHECKING:
    from .._config import Settings
    from ..knowledge import KnowledgeBase
    from ..storage import Store

__all__ = ["ItemOutcome", "OperationContext", "OperationFailed"]

log = logging.getLogger("autobot.operations")

# Items per second are measured over the last this many seconds of progress.
_RATE_WINDOW_S = 30.0
# Failed items kept in the result in full; the rest are only counted.
_FAILURES_KEPT = 100
# The least one item is given, whatever its type's average per_item_s: below
# a second, scheduling and disk noise alone would fail items.
MIN_ITEM_BUDGET_S = 1.0


class OperationFailed(AutoBotError):
    """The operation gave up: too many failed items, or a function said so.

    Raise it from an operation's function to end it ``failed`` with this
    message; the failures recorded so far go into the result.
    """

    status = 500
    code = "operation_failed"


@dataclass(slots=True)
class ItemOutcome:
    """How one :meth:`OperationContext.item` block ended; read it after the block."""

    name: str
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class _Rate:
    """Items per second over a sliding window of (time, processed) samples."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, when: float, processed: int) -> None:
        self.samples.append((when, processed))
        while len(self.samples) > 2 and self.samples[1][0] < when - _RATE_WINDOW_S:
            self.samples.pop(0)

    def per_second(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class OperationContext:
    """The running operation as its function sees it. Built by the runner, one per run.

    ``resume_state`` is the state of the last checkpoint (``None`` on a first
    run), ``resumed_items`` how many items it had processed. ``store`` and
    ``files_root`` are the server's; paths from clients go through
    :meth:`resolve`, which refuses every path outside the files root.
    """

    def __init__(
        self,
        *,
        operation_id: str,
        type_name: str,
        profile: TimeoutProfile,
        checkpoint_every_item: bool,
        settings: Settings,
        store: Store,
        resume_state: dict[str, Any] | None = None,
        resumed_items: int = 0,
        failures: Sequence[dict[str, Any]] = (),
        failed_count: int = 0,
        save_checkpoint: Callable[[dict[str, Any]], Awaitable[None]],
        item_latency: LatencyHistogram | None = None,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.id = operation_id
        self.type = type_name
        self.profile = profile
        self.settings = settings
        self.store = store
        self.files_root = Path(settings.data_dir) / "files"
        self.resume_state = resume_state
        self.resumed_items = resumed_items
        self._checkpoint_every_item = checkpoint_every_item
        self._save_checkpoint = save_checkpoint
        self._item_latency = item_latency or LatencyHistogram()
        #: The process's knowledge base, for the types that keep it (None in bare runs).
        self.knowledge = knowledge
        self._failures = list(failures)
        self._failed_count = failed_count
        self._progress = empty_progress()
        self._progress["processed_items"] = resumed_items
        self._progress["status_message"] = "running"
        self._rate = _Rate()
        self._started = trio.current_time()
        self._rate.add(self._started, resumed_items)
        self._pending: dict[str, Any] | None = None
        self._last_saved_at = self._started
        self._item_phase: DeadlinePhase | None = None
        self.run_phase: DeadlinePhase | None = None
        #: Set whenever progress changed, and for a change to publish at once
        #: (100 %); the runner replaces them as it publishes.
        self.progress_changed = trio.Event()
        self.progress_urgent = trio.Event()
        #: Called after every progress report (``run_operation``'s ``stop_when``).
        self.on_progress: Callable[[], None] | None = None

    # -- progress ------------------------------------------------------------------------

    @property
    def processed_items(self) -> int:
        return int(self._progress["processed_items"])

    @property
    def total_items(self) -> int | None:
        total = self._progress["total_items"]
        return None if total is None else int(total)

    def progress(
        self,
        *,
        processed: int | None = None,
        advance: int = 0,
        total: int | None = None,
        step: str | None = None,
        message: str | None = None,
    ) -> None:
        """Report where the operation is. Cheap: call it after every item.

        ``processed`` sets the count of processed items, ``advance`` adds to it;
        ``total`` is the number of items (once known, it also stretches the
        run's deadline to ``base_s + per_item_s × total`` within ``max_s``);
        ``step`` names the current phase and ``message`` says what is happening.
        Published at most once per ``progress_interval_s``, and at once at 100 %.
        """
        current = self._progress
        if total is not None:
            current["total_items"] = max(0, total)
            self._stretch_deadline(total)
        if processed is not None:
            current["processed_items"] = max(0, processed)
        if advance:
            current["processed_items"] += advance
        if step is not None:
            current["current_step"] = step
        if message is not None:
            current["status_message"] = message
        self._rate.add(trio.current_time(), current["processed_items"])
        done, all_items = current["processed_items"], current["total_items"]
        if all_items and done >= all_items:
            self.progress_urgent.set()
        self.progress_changed.set()
        if self.on_progress is not None:
            self.on_progress()

    def _stretch_deadline(self, total: int) -> None:
        if self.run_phase is not None:
            wanted = self.profile.deadline_s(total)
            if wanted > self.run_phase.budget_s:
                self.run_phase.rebudget(wanted)

    @property
    def deadline_s(self) -> float | None:
        return None if self.run_phase is None else self.run_phase.budget_s

    def snapshot(self) -> dict[str, Any]:
        """The contract's progress object, as of now."""
        current = dict(self._progress)
        done, total = current["processed_items"], current["total_items"]
        rate = self._rate.per_second()
        current["items_per_second"] = round(rate, 3)
        if total:
            current["progress_percentage"] = round(min(100.0, 100.0 * done / total), 2)
            if rate > 0 and done < total:
                seconds_left = (total - done) / rate
                current["estimated_completion"] = _iso_in(seconds_left)
            elif done >= total:
                current["estimated_completion"] = None
        return current

    # -- items ---------------------------------------------------------------------------

    @asynccontextmanager
    async def item(self, name: str) -> AsyncIterator[ItemOutcome]:
        """Run one item within ``per_item_s`` (at least 1 s; renewed by :meth:`heartbeat`).

        An item that raises, or outlives its budget, is recorded as failed and
        the block ends normally: read ``outcome.ok``. The failure that reaches
        ``failure_threshold`` ends the operation ``failed`` (``OperationFailed``
        is raised from the block). Cancellation of the operation passes through.
        """
        outcome = ItemOutcome(name)
        started = trio.current_time()
        try:
            budget_s = max(self.profile.per_item_s, MIN_ITEM_BUDGET_S)
            with phased_deadline("operation.item", budget_s) as phase:
                self._item_phase = phase
                yield outcome
        except Exception as error:  # an item's failure is data, not a crash
            outcome.error = describe_error(error)
        finally:
            self._item_phase = None
            outcome.seconds = trio.current_time() - started
        if outcome.ok:
            self._item_latency.record(outcome.seconds)
            return
        self.fail_item(name, outcome.error or "failed")

    def fail_item(self, name: str, error: str) -> None:
        """Record a failed item (one the function handled itself); may end the operation."""
        self._failed_count += 1
        if len(self._failures) < _FAILURES_KEPT:
            self._failures.append({"item": name, "error": error})
        log.info(
            "operation item failed",
            extra=log_fields(operation=self.id, type=self.type, item=name, error=error),
        )
        if self._failed_count >= self.profile.failure_threshold:
            raise OperationFailed(
                f"{self._failed_count} items failed (failure_threshold is "
                f"{self.profile.failure_threshold}); the last: {name}: {error}",
                failed_items=self._failed_count,
            )

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Failed items so far (the first 100 in full), across resumes."""
        return list(self._failures)

    @property
    def failed_count(self) -> int:
        return self._failed_count

    async def heartbeat(self, message: str | None = None) -> None:
        """Say the operation is alive during one long item: renews the item's budget.

        Also a cancellation point, so a long loop that calls it stays cancellable.
        """
        if self._item_phase is not None:
            self._item_phase.extend()
        if message is not None:
            self.progress(message=message)
        await trio.lowlevel.checkpoint()

    # -- checkpoints -----------------------------------------------------------------------

    async def checkpoint(
        self, state: dict[str, Any], *, processed_items: int | None = None
    ) -> bool:
        """Record ``state`` as the point to resume from; True if it was saved now.

        Saved at most once per ``checkpoint_interval_s`` (every call for a type
        declared ``checkpoint_every_item``); the latest state is always saved
        when the operation is cancelled, shut down or timed out. ``state``
        must be JSON; ``processed_items`` also moves the progress count.
        """
        if processed_items is not None:
            self.progress(processed=processed_items)
        self._pending = state
        due = trio.current_time() - self._last_saved_at >= self.profile.checkpoint_interval_s
        if self._checkpoint_every_item or due:
            try:
                await self.flush_checkpoint()
            except (ServiceUnavailable, DeadlineExceeded) as error:
                # The store is away for a moment: keep the state and try at the next
                # call, rather than fail hours of work over one lost save.
                log.warning(
                    "checkpoint not saved",
                    extra=log_fields(operation=self.id, error=describe_error(error)),
                )
                return False
            return True
        await trio.lowlevel.checkpoint()
        return False

    def checkpoint_record(self) -> dict[str, Any] | None:
        """The stored form of the latest state: ``None`` when nothing is pending."""
        if self._pending is None:
            return None
        created_at, _ = now()
        # A JSON round trip is the snapshot: the function goes on changing its state.
        state = json.loads(json.dumps(self._pending))
        return {
            "processed_items": self.processed_items,
            "created_at": created_at,
            "state": state,
            "failures": self.failures,
            "failed_count": self._failed_count,
        }

    async def flush_checkpoint(self) -> None:
        """Save the latest state now, if one is pending."""
        record = self.checkpoint_record()
        if record is None:
            return
        await self._save_checkpoint(record)
        self._pending = None
        self._last_saved_at = trio.current_time()

    # -- helpers for the functions -----------------------------------------------------------

    async def resolve(self, client_path: str, *, must_exist: bool = True) -> Path:
        """``client_path`` inside the files root.

        400 ``path_outside_root`` for any escape, 404 ``file_not_found`` when
        ``must_exist`` and it is missing.
        """
        return await resolve_client_path(self.files_root, client_path, must_exist=must_exist)

    async def run_process(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a subprocess to completion, output captured, exit status not checked.

        It runs in a session of its own: when the operation (or the item it
        runs in) is cancelled or expires, the whole process group is killed at
        once, so nothing it started keeps running.
        """
        return await trio.run_process(
            list(argv),
            cwd=cwd,
            env=env,
            check=False,
            capture_stdout=True,
            capture_stderr=True,
            start_new_session=True,
            deliver_cancel=_kill_process_group,
        )


async def _kill_process_group(process: trio.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        process.kill()
    await trio.lowlevel.checkpoint()


def _iso_in(seconds: float) -> str | None:
    if not math.isfinite(seconds) or seconds > 10 * 365 * 86400:
        return None
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
