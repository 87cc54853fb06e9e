"""The runner: queues, concurrency, leases, adoption, cancel, resume and shutdown.

One runner per server process, started by the services in the lifespan
nursery. Operations wait in three FIFO queues (``high`` first, then
``normal``, then ``low``); at most ``operations_concurrency`` run at once, each
in its own cancel scope.

Ownership is a lease per operation (``operation:<id>``) in the store. The
process that submits, resumes or adopts an operation holds its lease while it
is queued or running there, and renews every lease it holds each
``operation.heartbeat`` seconds; a lease outlives a missed renewal by
``operation.lease`` seconds. Each heartbeat the runner also looks for
operations that are ``queued`` or ``running`` with nobody's lease: their
owner died (or, with the embedded store, the server restarted), so it claims
and queues them, and they resume from their last checkpoint. A runner that
finds its lease taken stops its copy at once without touching the record.

Cancelling an operation another process runs goes through the store's
pub/sub channel ``operations:control``; progress and the final status are
published on ``operation:<id>``, where any process's WebSocket can follow them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from trio.lowlevel import ParkingLot

from .._config import Settings
from .._deadlines import current_deadlines, deadline, suggest_budget
from .._errors import AutoBotError
from .._health import describe_error
from .._latency import LatencyHistogram
from .._logging import log_fields
from .._metrics import Metrics
from .._operation_profile import TimeoutProfile
from ..files import resolve_client_path
from ..knowledge import AddressPolicy, KnowledgeBase, check_url
from ..storage import Store, new_id, now
from ._context import OperationContext
from ._execution import Outcome, execute
from ._model import (
    FINISHED,
    RESUMABLE,
    OperationPriority,
    OperationStatus,
    new_operation,
    operation_conflict,
    operation_not_found,
    public_view,
)
from ._registry import OperationRegistry, OperationType, registry

__all__ = ["OperationRunner", "progress_channel"]

log = logging.getLogger("autobot.operations")

CONTROL_CHANNEL = "operations:control"
_ACTIVE = (OperationStatus.QUEUED.value, OperationStatus.RUNNING.value)


def progress_channel(operation_id: str) -> str:
    """Where an operation's progress updates and final status are published."""
    return f"operation:{operation_id}"


def _lease(operation_id: str) -> str:
    return f"operation:{operation_id}"


def _cancel_mark(operation_id: str) -> str:
    """A lease that says "cancel this", for an owner that missed the message (it died)."""
    return f"operation-cancel:{operation_id}"


# How long a cancel request waits for an operation whose owner died to be adopted.
_CANCEL_MARK_S = 86400.0
# Every process sets and clears the mark under one name, so any of them can clear it.
_CANCEL_MARK_OWNER = "cancel-requested"


def _final_message(status: OperationStatus, outcome: Outcome | None) -> str:
    if status is OperationStatus.COMPLETED:
        return "completed"
    if status is OperationStatus.CANCELLED:
        return "cancelled"
    error = (outcome.error or {}) if outcome else {}
    detail = error.get("message", "")
    label = "timed out" if status is OperationStatus.TIMED_OUT else "failed"
    return f"{label}: {detail}" if detail else label


@dataclass(slots=True)
class _Run:
    """One operation running in this process."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: str | None = None  # why it was cancelled: "cancel", "shutdown", "lease_lost"
    context: OperationContext | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.scope.cancel()


class OperationRunner:
    """Runs the operations of one process; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        *,
        types: OperationRegistry = registry,
        metrics: Metrics | None = None,
        knowledge: Callable[[], KnowledgeBase] | None = None,
    ) -> None:
        self.settings = settings
        self._knowledge = knowledge
        self._metrics = metrics
        self._store = store
        self.types = types
        overrides = settings.operation_profiles
        self.profiles: dict[str, TimeoutProfile] = {
            op_type.name: op_type.profile.with_overrides(overrides.get(op_type.name, {}))
            for op_type in types
        }
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self._queues: dict[OperationPriority, deque[str]] = {p: deque() for p in OperationPriority}
        self._waiting_for_work = ParkingLot()
        self._owned: set[str] = set()
        self._running: dict[str, _Run] = {}
        self._item_latency: dict[str, LatencyHistogram] = {
            t.name: LatencyHistogram() for t in types
        }
        self._stopping = False
        self._nursery: trio.Nursery | None = None

    # -- the service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Adopt what is left to do, then run operations until cancelled (see :meth:`shutdown`)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._adopt_orphans()
            for _ in range(self.settings.operations_concurrency):
                nursery.start_soon(self._worker)
            nursery.start_soon(self._keep_leases)
            nursery.start_soon(self._follow_control)
            task_status.started()

    async def shutdown(self) -> None:
        """Stop every running operation so that it resumes later, and give up every lease.

        Running operations save their latest checkpoint and go back to
        ``queued``: the next start (embedded) or another process (Redis)
        continues them. Never ``failed``.
        """
        self._stopping = True
        runs = list(self._running.values())
        for run in runs:
            run.stop("shutdown")
        for run in runs:
            await run.done.wait()
        store = self._store_or_none()
        if store is None:  # the leases lapse by themselves
            return
        for operation_id in list(self._owned):
            await self._give_up(store, operation_id)

    @property
    def running(self) -> list[str]:
        return list(self._running)

    def counts(self) -> dict[str, int]:
        """Operations this process holds: queued here, running here."""
        queued = sum(len(queue) for queue in self._queues.values())
        return {"queued": queued, "running": len(self._running)}

    def _count_run(self, type_name: str, ending: str) -> None:
        if self._metrics is not None:
            self._metrics.operation_runs.labels(type_name, ending).inc()

    # -- submitting, reading -----------------------------------------------------------------

    async def submit(
        self,
        type_name: Any,
        params: dict[str, Any] | None = None,
        *,
        priority: OperationPriority = OperationPriority.NORMAL,
        estimated_items: int | None = None,
    ) -> dict[str, Any]:
        """Validate and queue a new operation; its record (``queued``).

        422 for an unknown type or bad parameters; a ``path`` parameter is
        resolved now, so a path outside the root (400) or a missing one (404)
        is refused before anything is queued, and a ``url`` is checked
        against the crawl's address guard (422 ``url_not_allowed``).
        """
        op_type = self.types[type_name]
        parsed = op_type.parse_params(params)
        path = getattr(parsed, "path", None)
        if isinstance(path, str):
            must_exist = not getattr(parsed, "creates_path", False)
            await resolve_client_path(self.settings.data_dir / "files", path, must_exist=must_exist)
        url = getattr(parsed, "url", None)
        if isinstance(url, str):
            # The same guard as the crawl route: a URL is checked before anything is queued.
            await check_url(url, AddressPolicy(allow_private=self.settings.crawl_allow_private))
        profile = self.profiles[op_type.name]
        record = new_operation(
            op_type.name,
            parsed.model_dump(mode="json"),
            priority,
            estimated_items,
            profile.deadline_s(estimated_items),
        )
        store = self._store()
        await store.claim_lease(_lease(record["id"]), self.owner, self._lease_s())
        await store.put_operation(record)
        self._enqueue(record["id"], priority)
        return public_view(record)

    async def get(self, operation_id: str) -> dict[str, Any]:
        """The operation's record, with live progress when it runs here; 404 otherwise."""
        record = await self._store().get_operation(operation_id)
        if record is None:
            raise operation_not_found(operation_id)
        run = self._running.get(operation_id)
        if run is not None and run.context is not None and record["status"] == "running":
            record["progress"] = run.context.snapshot()
        return public_view(record)

    async def list(self, status: str | None = None, type_name: str | None = None) -> list[dict]:
        records = await self._store().list_operations()
        return [
            public_view(record)
            for record in records
            if (status is None or record["status"] == status)
            and (type_name is None or record["type"] == type_name)
        ]

    def describe_types(self) -> list[dict[str, Any]]:
        """``GET /api/operations/types``: each type's profile and what its items took."""
        described = []
        for op_type in self.types:
            profile = self.profiles[op_type.name]
            entry: dict[str, Any] = {
                "type": op_type.name,
                "description": op_type.description,
                "profile": profile.to_json(),
            }
            summary = self._item_latency[op_type.name].summary()
            if summary.count:
                entry["observed"] = {
                    "items": summary.count,
                    "per_item_p50_s": summary.p50_s,
                    "per_item_p99_s": summary.p99_s,
                    "per_item_max_s": summary.max_s,
                    "suggested_per_item_s": suggest_budget(profile.per_item_s, summary),
                }
            described.append(entry)
        return described

    # -- cancel and resume -------------------------------------------------------------------

    async def cancel(self, operation_id: str) -> dict[str, Any]:
        """Cancel a queued or running operation wherever it runs; its record once it stopped.

        409 when it already finished; 404 when there is no such operation.
        """
        store = self._store()
        record = await self._require(store, operation_id)
        if record["status"] in FINISHED:
            raise operation_conflict(record, "cancelled", "operation_finished")
        run = self._running.get(operation_id)
        if run is not None:
            run.stop("cancel")
            with deadline("operation.cancel"):
                await run.done.wait()
            return await self.get(operation_id)
        if operation_id in self._owned or await store.claim_lease(
            _lease(operation_id), self.owner, self._lease_s()
        ):
            # Queued here, or nobody's: end it on the spot.
            self._unqueue(operation_id)
            record = await self._require(store, operation_id)
            await self._finish(store, record, OperationStatus.CANCELLED, None, None)
            await self._give_up(store, operation_id)
            return public_view(record)
        return await self._cancel_remote(store, operation_id)

    async def _cancel_remote(self, store: Store, operation_id: str) -> dict[str, Any]:
        # If the owner dies before it hears the message, whoever adopts it sees this.
        await store.claim_lease(_cancel_mark(operation_id), _CANCEL_MARK_OWNER, _CANCEL_MARK_S)
        with deadline("operation.cancel"):
            async with store.subscribe(progress_channel(operation_id)) as messages:
                await store.publish(CONTROL_CHANNEL, {"action": "cancel", "id": operation_id})
                record = await self._require(store, operation_id)
                if record["status"] not in FINISHED:
                    async for message in messages:
                        if message.get("type") == "status":
                            break
            return await self.get(operation_id)

    async def resume(self, operation_id: str) -> dict[str, Any]:
        """Queue a cancelled, failed or timed-out operation to continue from its checkpoint."""
        store = self._store()
        record = await self._require(store, operation_id)
        if record["status"] not in RESUMABLE:
            raise operation_conflict(record, "resumed", "operation_not_resumable")
        if not await store.claim_lease(_lease(operation_id), self.owner, self._lease_s()):
            raise operation_conflict(
                record, "resumed while another process holds it", "operation_busy"
            )
        await store.release_lease(_cancel_mark(operation_id), _CANCEL_MARK_OWNER)
        record.update(status=OperationStatus.QUEUED.value, error=None, finished_at=None)
        record["progress"]["status_message"] = "queued to resume"
        await store.put_operation(record)
        self._enqueue(operation_id, OperationPriority(record["priority"]))
        return public_view(record)

    # -- queues --------------------------------------------------------------------------------

    def _enqueue(self, operation_id: str, priority: OperationPriority) -> None:
        self._owned.add(operation_id)
        self._queues[priority].append(operation_id)
        self._waiting_for_work.unpark()

    def _unqueue(self, operation_id: str) -> None:
        for queue in self._queues.values():
            if operation_id in queue:
                queue.remove(operation_id)

    async def _next(self) -> str:
        while True:
            for priority in OperationPriority:  # high, normal, low
                if self._queues[priority]:
                    return self._queues[priority].popleft()
            await self._waiting_for_work.park()

    async def _worker(self) -> None:
        while True:
            operation_id = await self._next()
            try:
                await self._run(operation_id)
            except AutoBotError as error:
                # The store went away before the run could start: try it again later.
                log.warning(
                    "operation could not start",
                    extra=log_fields(operation=operation_id, error=describe_error(error)),
                )
                await trio.sleep(self._heartbeat_s())
                if operation_id in self._owned and not self._stopping:
                    self._queues[OperationPriority.HIGH].appendleft(operation_id)
                    self._waiting_for_work.unpark()

    # -- one run -------------------------------------------------------------------------------

    async def _run(self, operation_id: str) -> None:
        if operation_id in self._running:
            return  # queued twice (a resume racing a run): it is running here already
        # Registered before the first wait, so a cancel arriving while the run is
        # still starting stops it instead of finishing a record the run then rewrites.
        run = _Run()
        self._running[operation_id] = run
        try:
            await self._start_and_run(operation_id, run)
        finally:
            del self._running[operation_id]
            run.done.set()

    async def _start_and_run(self, operation_id: str, run: _Run) -> None:
        store = self._store()
        record = await store.get_operation(operation_id)
        if record is None or record["status"] not in _ACTIVE or self._stopping:
            if record is None or record["status"] in FINISHED:
                await self._give_up(store, operation_id)
            return
        try:
            op_type = self.types[record["type"]]
            parsed = op_type.parse_params(record["params"])
        except AutoBotError as error:  # stored by another version of the server
            outcome = Outcome(OperationStatus.FAILED, None, error.to_body()["error"])
            await self._finish(store, record, OperationStatus.FAILED, outcome, None)
            await self._give_up(store, operation_id)
            return
        if (
            run.reason == "cancel"
            or await store.lease_owner(_cancel_mark(operation_id)) is not None
        ):
            await self._finish(store, record, OperationStatus.CANCELLED, None, None)
            await self._give_up(store, operation_id)
            return
        checkpoint = await store.get_checkpoint(operation_id)
        try:
            ctx = self._context(store, op_type, record, checkpoint)
            run.context = ctx
            started_at, _ = now()
            record.update(
                status=OperationStatus.RUNNING.value,
                started_at=started_at,
                finished_at=None,
                attempts=record.get("attempts", 0) + 1,
                owner=self.owner,
                error=None,
                deadline_s=self.profiles[op_type.name].deadline_s(record.get("estimated_items")),
                progress=ctx.snapshot(),
            )
            await store.put_operation(record)
            await self._publish(
                store, operation_id, {"type": "progress_update", "data": ctx.snapshot()}
            )
            outcome = None
            with run.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._publish_progress, store, record, ctx)
                    outcome = await execute(op_type, ctx, parsed, record.get("estimated_items"))
                    nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await self._after_run(store, record, ctx, run, outcome)
        except trio.Cancelled:
            # The runner itself is being cancelled: leave the operation resumable.
            with trio.CancelScope(shield=True):
                await self._interrupted(store, record, run.context)
            raise

    def _context(
        self,
        store: Store,
        op_type: OperationType,
        record: dict[str, Any],
        checkpoint: dict[str, Any] | None,
    ) -> OperationContext:
        async def save(saved: dict[str, Any]) -> None:
            record["checkpoint"] = {
                "processed_items": saved["processed_items"],
                "created_at": saved["created_at"],
            }
            await store.put_checkpoint(record["id"], saved, operation=record)

        checkpoint = checkpoint or {}
        return OperationContext(
            operation_id=record["id"],
            type_name=op_type.name,
            profile=self.profiles[op_type.name],
            checkpoint_every_item=op_type.checkpoint_every_item,
            settings=self.settings,
            store=store,
            resume_state=checkpoint.get("state"),
            resumed_items=checkpoint.get("processed_items", 0),
            failures=checkpoint.get("failures", ()),
            failed_count=checkpoint.get("failed_count", 0),
            save_checkpoint=save,
            item_latency=self._item_latency[op_type.name],
            knowledge=None if self._knowledge is None else self._knowledge(),
        )

    async def _after_run(
        self,
        store: Store,
        record: dict[str, Any],
        ctx: OperationContext,
        run: _Run,
        outcome: Outcome | None,
    ) -> None:
        operation_id = record["id"]
        reason = outcome.status.value if outcome else run.reason or "cancel"
        ending = {"cancel": "cancelled", "shutdown": "interrupted"}.get(reason, reason)
        self._count_run(record["type"], ending)
        log.info(
            "operation run ended",
            extra=log_fields(
                operation=operation_id,
                type=record["type"],
                ending=ending,
                attempts=record["attempts"],
                processed_items=ctx.processed_items,
            ),
        )
        if outcome is not None:
            await self._finish(store, record, outcome.status, outcome, ctx)
            if outcome.status is OperationStatus.COMPLETED:
                await store.delete_checkpoint(operation_id)
            await self._give_up(store, operation_id)
        elif run.reason == "cancel":
            await ctx.flush_checkpoint()
            await self._finish(store, record, OperationStatus.CANCELLED, None, ctx)
            await self._give_up(store, operation_id)
        elif run.reason == "shutdown":
            await self._interrupted(store, record, ctx)
        else:  # lease_lost: another process has it now; its record is not ours to write
            self._owned.discard(operation_id)

    async def _interrupted(
        self, store: Store, record: dict[str, Any], ctx: OperationContext | None
    ) -> None:
        """Save what a run interrupted by shutdown did, and leave it for the next owner."""
        try:
            if ctx is not None:
                await ctx.flush_checkpoint()
                record["progress"] = ctx.snapshot()
            record["status"] = OperationStatus.QUEUED.value
            record["progress"]["status_message"] = "interrupted by shutdown; resumes on restart"
            record.pop("owner", None)
            await store.put_operation(record)
        except AutoBotError as error:
            log.error(
                "interrupted operation not saved",
                extra=log_fields(operation=record["id"], error=describe_error(error)),
            )
        await self._give_up(store, record["id"])

    async def _finish(
        self,
        store: Store,
        record: dict[str, Any],
        status: OperationStatus,
        outcome: Outcome | None,
        ctx: OperationContext | None,
    ) -> None:
        finished_at, _ = now()
        if ctx is not None:
            record["progress"] = ctx.snapshot()
            record["deadline_s"] = ctx.deadline_s or record["deadline_s"]
        progress = record["progress"]
        if status is OperationStatus.COMPLETED and progress.get("total_items") is None:
            progress["total_items"] = progress["processed_items"]
        if status is OperationStatus.COMPLETED:
            progress["progress_percentage"] = 100.0
            progress["estimated_completion"] = None
        progress["items_per_second"] = progress.get("items_per_second", 0.0)
        progress["status_message"] = _final_message(status, outcome)
        record.update(
            status=status.value,
            finished_at=finished_at,
            result=outcome.result if outcome else record.get("result"),
            error=outcome.error if outcome else None,
        )
        record.pop("owner", None)
        await store.put_operation(record)
        await self._publish(store, record["id"], {"type": "status", "data": public_view(record)})

    # -- progress ------------------------------------------------------------------------------

    async def _publish(self, store: Store, operation_id: str, message: dict[str, Any]) -> None:
        try:
            await store.publish(progress_channel(operation_id), message)
        except AutoBotError as error:
            log.warning(
                "progress not published",
                extra=log_fields(operation=operation_id, error=describe_error(error)),
            )

    async def _publish_progress(
        self, store: Store, record: dict[str, Any], ctx: OperationContext
    ) -> None:
        """Publish progress when it changes: at most once per interval, at once at 100 %."""
        interval_s = ctx.profile.progress_interval_s
        while True:
            await ctx.progress_changed.wait()
            ctx.progress_changed = trio.Event()
            ctx.progress_urgent = trio.Event()
            snapshot = ctx.snapshot()
            record["progress"] = snapshot
            record["deadline_s"] = ctx.deadline_s or record["deadline_s"]
            await self._publish(store, record["id"], {"type": "progress_update", "data": snapshot})
            try:
                await store.put_operation(record)
            except AutoBotError as error:
                log.warning(
                    "progress not stored",
                    extra=log_fields(operation=record["id"], error=describe_error(error)),
                )
            with trio.move_on_after(interval_s):
                await ctx.progress_urgent.wait()

    # -- leases, adoption, control ------------------------------------------------------------

    def _lease_s(self) -> float:
        return current_deadlines().budget("operation.lease")

    def _heartbeat_s(self) -> float:
        return current_deadlines().budget("operation.heartbeat")

    async def _give_up(self, store: Store, operation_id: str) -> None:
        self._owned.discard(operation_id)
        self._unqueue(operation_id)
        try:
            await store.release_lease(_lease(operation_id), self.owner)
        except AutoBotError as error:  # it lapses by itself
            log.warning(
                "lease not released",
                extra=log_fields(operation=operation_id, error=describe_error(error)),
            )

    async def _keep_leases(self) -> None:
        while True:
            await trio.sleep(self._heartbeat_s())
            store = self._store_or_none()
            if store is None:
                continue
            for operation_id in list(self._owned):
                try:
                    held = await store.renew_lease(
                        _lease(operation_id), self.owner, self._lease_s()
                    )
                except AutoBotError as error:
                    log.warning(
                        "lease not renewed",
                        extra=log_fields(operation=operation_id, error=describe_error(error)),
                    )
                    continue
                if not held:
                    self._lost(operation_id)
            await self._adopt_orphans()

    def _lost(self, operation_id: str) -> None:
        log.warning("operation lease lost", extra=log_fields(operation=operation_id))
        self._owned.discard(operation_id)
        self._unqueue(operation_id)
        run = self._running.get(operation_id)
        if run is not None:
            run.stop("lease_lost")

    def _store_or_none(self) -> Store | None:
        try:
            return self._store()
        except AutoBotError:
            return None

    async def _adopt_orphans(self) -> None:
        """Claim and queue every unfinished operation whose owner is gone."""
        store = self._store_or_none()
        if store is None or self._stopping:
            return
        try:
            records = await store.list_operations(unfinished_only=True)
            for record in reversed(records):  # oldest first, so FIFO holds
                operation_id = record["id"]
                if record["status"] not in _ACTIVE or operation_id in self._owned:
                    continue
                if await store.claim_lease(_lease(operation_id), self.owner, self._lease_s()):
                    log.info(
                        "operation adopted",
                        extra=log_fields(operation=operation_id, previous=record.get("owner")),
                    )
                    self._enqueue(operation_id, OperationPriority(record["priority"]))
        except AutoBotError as error:
            log.warning("adoption scan failed", extra=log_fields(error=describe_error(error)))

    async def _follow_control(self) -> None:
        """Act on cancels sent by other processes; resubscribe after a lost connection."""
        while True:
            try:
                async with self._store().subscribe(CONTROL_CHANNEL) as messages:
                    async for message in messages:
                        self._on_control(message)
            except AutoBotError as error:
                log.warning("control channel lost", extra=log_fields(error=describe_error(error)))
            await trio.sleep(self._heartbeat_s())

    def _on_control(self, message: dict[str, Any]) -> None:
        operation_id = message.get("id")
        if message.get("action") != "cancel" or not isinstance(operation_id, str):
            return
        run = self._running.get(operation_id)
        if run is not None:
            run.stop("cancel")
        elif operation_id in self._owned and self._nursery is not None:
            self._unqueue(operation_id)
            self._nursery.start_soon(self._cancel_queued, operation_id)

    async def _cancel_queued(self, operation_id: str) -> None:
        store = self._store()
        record = await store.get_operation(operation_id)
        if record is not None and record["status"] not in FINISHED:
            await self._finish(store, record, OperationStatus.CANCELLED, None, None)
        await self._give_up(store, operation_id)

    async def _require(self, store: Store, operation_id: str) -> dict[str, Any]:
        record = await store.get_operation(operation_id)
        if record is None:
            raise operation_not_found(operation_id)
        return record
