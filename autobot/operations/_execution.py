"""Running one operation's function inside its deadline, and what came of it.

:func:`execute` is the part of a run that knows nothing about queues, leases
or storage: it opens the ``operation.run`` scope with the budget of the type's
profile, calls the function, and sorts the way it ended into a status. The
runner wraps it with the record keeping; :func:`run_operation` wraps it with
nothing, to run a type in-process (scripts, tests of a new type).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from pydantic import BaseModel

from .._config import Settings
from .._deadlines import phased_deadline
from .._errors import AutoBotError, DeadlineExceeded
from .._health import describe_error
from .._logging import log_fields
from ._context import OperationContext, OperationFailed
from ._model import OperationStatus
from ._registry import OperationRegistry, OperationType, registry

if TYPE_CHECKING:
    from ..knowledge import KnowledgeBase
    from ..storage import Store

__all__ = ["Outcome", "execute", "run_operation"]

log = logging.getLogger("autobot.operations")


@dataclass(slots=True)
class Outcome:
    """How one run ended: a finished status (or ``None`` if it was cancelled from outside)."""

    status: OperationStatus
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def _error_of(error: BaseException) -> dict[str, Any]:
    if isinstance(error, AutoBotError):
        return error.to_body()["error"]
    return {"code": "internal_error", "message": describe_error(error)}


def _result_of(ctx: OperationContext, value: dict[str, Any] | None) -> dict[str, Any]:
    result = dict(value or {})
    if ctx.failed_count:
        result.setdefault("failed_items", ctx.failed_count)
        result.setdefault("failures", ctx.failures)
    return result


async def execute(
    op_type: OperationType,
    ctx: OperationContext,
    params: BaseModel,
    estimated_items: int | None,
) -> Outcome:
    """Run the function under ``operation.run``; the latest checkpoint is saved unless it completed.

    Cancellation from outside (a user's cancel, shutdown) propagates as
    ``trio.Cancelled`` after nothing was saved: the caller decides what a
    cancelled run leaves behind.
    """
    budget_s = ctx.profile.deadline_s(max(estimated_items or 0, ctx.total_items or 0))
    try:
        with phased_deadline("operation.run", budget_s) as phase:
            ctx.run_phase = phase
            value = await op_type.function(ctx, params)
    except DeadlineExceeded as error:
        outcome = Outcome(
            OperationStatus.TIMED_OUT if error.scope == "operation.run" else OperationStatus.FAILED,
            _result_of(ctx, None),
            _error_of(error),
        )
    except OperationFailed as error:
        outcome = Outcome(OperationStatus.FAILED, _result_of(ctx, None), _error_of(error))
    except Exception as error:
        if not isinstance(error, AutoBotError):
            log.exception("operation crashed", extra=log_fields(operation=ctx.id, type=ctx.type))
        outcome = Outcome(OperationStatus.FAILED, _result_of(ctx, None), _error_of(error))
    else:
        return Outcome(OperationStatus.COMPLETED, _result_of(ctx, value))
    await ctx.flush_checkpoint()
    return outcome


@dataclass(slots=True)
class LocalRun:
    """What :func:`run_operation` returns: the outcome, the context, the last checkpoint."""

    outcome: Outcome
    context: OperationContext
    checkpoint: dict[str, Any] | None


async def run_operation(
    type_name: str,
    params: dict[str, Any] | None = None,
    *,
    settings: Settings,
    store: Store | None = None,
    checkpoint: dict[str, Any] | None = None,
    estimated_items: int | None = None,
    types: OperationRegistry = registry,
    stop_when: Callable[[OperationContext], bool] | None = None,
    knowledge: KnowledgeBase | None = None,
) -> LocalRun:
    """Run one operation in this task, without a runner: no queue, no lease, no record.

    Checkpoints are kept in memory and the last one is returned, so a second
    call with ``checkpoint=`` resumes from it, as the runner would. The profile
    is the type's, with the settings' overrides applied. ``store`` may be left
    out for a type that does not use one (``ctx.store`` is then unusable).

    ``stop_when(ctx)`` is asked after every progress report; once it says
    yes, the run is cancelled at its next ``await``, as a user's cancel would
    cancel it, and ends ``cancelled`` with the checkpoint the runner would
    save. Tests of a type use it to interrupt a run at an exact item::

        first = await run_operation(..., stop_when=lambda ctx: ctx.processed_items >= 3)
        second = await run_operation(..., checkpoint=first.checkpoint)
    """
    op_type = types[type_name]
    parsed = op_type.parse_params(params)
    saved: list[dict[str, Any]] = []

    async def keep(record: dict[str, Any]) -> None:
        saved.append(record)

    ctx = OperationContext(
        operation_id="local",
        type_name=type_name,
        profile=op_type.profile.with_overrides(settings.operation_profiles.get(type_name, {})),
        checkpoint_every_item=op_type.checkpoint_every_item,
        settings=settings,
        store=store,  # type: ignore[arg-type]
        resume_state=None if checkpoint is None else checkpoint["state"],
        resumed_items=0 if checkpoint is None else checkpoint["processed_items"],
        failures=() if checkpoint is None else checkpoint.get("failures", ()),
        failed_count=0 if checkpoint is None else checkpoint.get("failed_count", 0),
        save_checkpoint=keep,
        knowledge=knowledge,
    )
    with trio.CancelScope() as stopped:
        if stop_when is not None:

            def stop_if_asked() -> None:
                if stop_when(ctx):
                    stopped.cancel()

            ctx.on_progress = stop_if_asked
        outcome = await execute(op_type, ctx, parsed, estimated_items)
    if stopped.cancelled_caught:
        await ctx.flush_checkpoint()
        outcome = Outcome(OperationStatus.CANCELLED)
    return LocalRun(outcome, ctx, saved[-1] if saved else checkpoint)
