"""Operation records: statuses, priorities, and the errors the routes answer with.

An operation is stored as one JSON object (the contract's operation fields,
plus ``params`` and ``estimated_items``); its resume state is stored apart, as
its checkpoint, so that listing operations never moves their intermediate
results around.
"""

from __future__ import annotations

import enum
from typing import Any

from .._errors import Conflict, NotFound, ValidationFailed, echo
from ..storage import new_id, now

__all__ = [
    "FINISHED",
    "RESUMABLE",
    "OperationPriority",
    "OperationStatus",
    "empty_progress",
    "new_operation",
    "operation_conflict",
    "operation_not_found",
    "parse_priority",
    "public_view",
]


class OperationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


#: Statuses an operation never leaves by itself.
FINISHED = frozenset(
    {
        OperationStatus.COMPLETED,
        OperationStatus.FAILED,
        OperationStatus.CANCELLED,
        OperationStatus.TIMED_OUT,
    }
)
#: Statuses ``POST .../resume`` accepts.
RESUMABLE = frozenset(
    {OperationStatus.FAILED, OperationStatus.CANCELLED, OperationStatus.TIMED_OUT}
)


class OperationPriority(enum.StrEnum):
    """The runner's three queues; ``high`` is taken first, FIFO within one."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


def parse_priority(value: Any) -> OperationPriority:
    """The priority named exactly by ``value``; 422 naming the allowed ones otherwise."""
    try:
        return OperationPriority(value)
    except ValueError:
        allowed = ", ".join(p.value for p in OperationPriority)
        raise ValidationFailed(
            f"priority {echo(value)} is not one of {allowed}",
            fields=[{"field": "priority", "message": f"must be one of {allowed}"}],
        ) from None


def operation_not_found(operation_id: str) -> NotFound:
    return NotFound(f"no operation with id {echo(operation_id)}", code="operation_not_found")


def operation_conflict(record: dict[str, Any], wanted: str, code: str) -> Conflict:
    """409 for an operation whose status forbids ``wanted``; names the status."""
    return Conflict(
        f"operation {record['id']} is {record['status']}: it cannot be {wanted}",
        code=code,
        operation_status=record["status"],
    )


def empty_progress() -> dict[str, Any]:
    return {
        "current_step": None,
        "progress_percentage": 0.0,
        "processed_items": 0,
        "total_items": None,
        "items_per_second": 0.0,
        "estimated_completion": None,
        "status_message": "queued",
    }


def new_operation(
    type_name: str,
    params: dict[str, Any],
    priority: OperationPriority,
    estimated_items: int | None,
    deadline_s: float,
) -> dict[str, Any]:
    """The record of an operation just submitted: ``queued``, never started."""
    created_at, _ = now()
    return {
        "id": new_id(),
        "type": type_name,
        "status": OperationStatus.QUEUED.value,
        "priority": priority.value,
        "created_at": created_at,
        "started_at": None,
        "finished_at": None,
        "deadline_s": deadline_s,
        "progress": empty_progress(),
        "result": None,
        "error": None,
        "checkpoint": None,
        "attempts": 0,
        "params": params,
        "estimated_items": estimated_items,
    }


#: Fields of the stored record that are the runner's business, not the client's.
_PRIVATE = ("owner",)


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the API shows it."""
    return {key: value for key, value in record.items() if key not in _PRIVATE}
