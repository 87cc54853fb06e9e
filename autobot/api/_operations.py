"""Long-running operation routes: start, list, read, cancel, resume, follow progress."""

from __future__ import annotations

import json
from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint, websocket
from quart_schema import document_response, validate_querystring, validate_request

from ..operations import (
    FINISHED,
    OPERATION_TYPES,
    OperationPriority,
    OperationRunner,
    OperationStatus,
    progress_channel,
)
from ._context import services
from ._openapi import ErrorDetail, errors, websocket_messages

__all__ = ["operations"]

operations = Blueprint("operations", __name__)

PriorityName = Literal["high", "normal", "low"]
# No estimate a client sends can be larger: the deadline is capped by max_s anyway.
MAX_ESTIMATED_ITEMS = 1_000_000_000


class _Start(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: PriorityName = "normal"
    estimated_items: int | None = Field(default=None, ge=0, le=MAX_ESTIMATED_ITEMS, strict=True)


class StartOperation(_Start):
    type: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] | None = None


class StartOnPath(_Start):
    path: str = Field(max_length=4096)


class StartOnPatterns(StartOnPath):
    patterns: list[str] | None = Field(default=None, min_length=1, max_length=50)


class OperationListQuery(BaseModel):
    status: OperationStatus | None = None
    type: str | None = Field(default=None, max_length=100)


# -- response models (the OpenAPI document's; the runner makes the bodies) -----------------


class Progress(BaseModel):
    current_step: str | None
    progress_percentage: float
    processed_items: int
    total_items: int | None
    items_per_second: float
    estimated_completion: str | None
    status_message: str | None


class Checkpoint(BaseModel):
    """The last checkpoint saved: a resume continues from there."""

    model_config = ConfigDict(extra="allow")

    processed_items: int
    created_at: str


class Operation(BaseModel):
    id: str
    type: str
    status: OperationStatus
    priority: PriorityName
    created_at: str
    started_at: str | None
    finished_at: str | None
    deadline_s: float | None
    progress: Progress
    result: Any = Field(description="the type's result once completed, else null")
    error: ErrorDetail | None
    checkpoint: Checkpoint | None
    attempts: int
    params: dict[str, Any] | SkipJsonSchema[None] = None
    estimated_items: int | None = None


class OperationStarted(BaseModel):
    operation_id: str
    operation: Operation


class OperationList(BaseModel):
    operations: list[Operation]


class TimeoutProfileOut(BaseModel):
    base_s: float
    per_item_s: float
    max_s: float
    checkpoint_interval_s: float
    progress_interval_s: float
    failure_threshold: int


class ObservedItems(BaseModel):
    items: int
    per_item_p50_s: float
    per_item_p99_s: float
    per_item_max_s: float
    suggested_per_item_s: float


class OperationType(BaseModel):
    type: str
    description: str
    profile: TimeoutProfileOut
    observed: ObservedItems | SkipJsonSchema[None] = None


class OperationTypes(BaseModel):
    types: list[OperationType]
    contract_types: list[str]


class ProgressUpdate(BaseModel):
    """WebSocket ``progress_update``: the operation's progress now."""

    type: Literal["progress_update"]
    data: Progress


class StatusUpdate(BaseModel):
    """WebSocket ``status``: the operation's record; the last message once it ended."""

    type: Literal["status"]
    data: Operation


def _runner() -> OperationRunner:
    return services().operations


async def _start(type_name: str, start: _Start, params: dict[str, Any]) -> tuple[dict, int]:
    record = await _runner().submit(
        type_name,
        params,
        priority=OperationPriority(start.priority),
        estimated_items=start.estimated_items,
    )
    return {"operation_id": record["id"], "operation": record}, 202


def _params_of(start: BaseModel) -> dict[str, Any]:
    return start.model_dump(exclude={"priority", "estimated_items"}, exclude_none=True)


@operations.post("/api/operations")
@validate_request(StartOperation)
@document_response(OperationStarted, 202)
@errors(404)
async def start_operation(data: StartOperation) -> tuple[dict, int]:
    """Start an operation of any registered type (see ``GET /api/operations/types``)."""
    return await _start(data.type, data, data.params or {})


@operations.post("/api/operations/codebase/index")
@validate_request(StartOnPatterns)
@document_response(OperationStarted, 202)
@errors(404)
async def index_codebase(data: StartOnPatterns) -> tuple[dict, int]:
    return await _start("codebase_indexing", data, _params_of(data))


@operations.post("/api/operations/security/scan")
@validate_request(StartOnPath)
@document_response(OperationStarted, 202)
@errors(404)
async def scan_security(data: StartOnPath) -> tuple[dict, int]:
    return await _start("security_scan", data, _params_of(data))


@operations.post("/api/operations/knowledge-base/populate")
@validate_request(StartOnPatterns)
@document_response(OperationStarted, 202)
@errors(404)
async def populate_knowledge_base(data: StartOnPatterns) -> tuple[dict, int]:
    return await _start("kb_population", data, _params_of(data))


@operations.post("/api/operations/testing/comprehensive")
@validate_request(StartOnPath)
@document_response(OperationStarted, 202)
@errors(404)
async def run_test_suite(data: StartOnPath) -> tuple[dict, int]:
    return await _start("comprehensive_test_suite", data, _params_of(data))


@operations.get("/api/operations/types")
@document_response(OperationTypes)
async def operation_types() -> dict[str, Any]:
    """Every type's timeout profile and, once items ran, what they took."""
    return {"types": _runner().describe_types(), "contract_types": list(OPERATION_TYPES)}


@operations.get("/api/operations/")
@operations.get("/api/operations")
@validate_querystring(OperationListQuery)
@document_response(OperationList)
async def list_operations(query_args: OperationListQuery) -> dict[str, Any]:
    status = None if query_args.status is None else query_args.status.value
    return {"operations": await _runner().list(status, query_args.type)}


@operations.get("/api/operations/<operation_id>")
@document_response(Operation)
async def get_operation(operation_id: str) -> dict[str, Any]:
    return await _runner().get(operation_id)


@operations.post("/api/operations/<operation_id>/cancel")
@document_response(Operation)
@errors(409)
async def cancel_operation(operation_id: str) -> dict[str, Any]:
    return await _runner().cancel(operation_id)


@operations.post("/api/operations/<operation_id>/resume")
@document_response(Operation, 202)
@errors(409)
async def resume_operation(operation_id: str) -> tuple[dict, int]:
    return await _runner().resume(operation_id), 202


async def _send(message: dict[str, Any]) -> None:
    await websocket.send(json.dumps(message, ensure_ascii=False, separators=(",", ":")))


@operations.websocket("/api/operations/<operation_id>/progress")
@websocket_messages(
    "The operation's progress as it runs, then its record when it ends.",
    client={},
    server={"progress_update": ProgressUpdate, "status": StatusUpdate},
)
async def follow_progress(operation_id: str) -> None:
    """``progress_update`` messages, then one ``status`` when the operation ends.

    The current state comes first, so a client that connects late (or to
    another process than the one running the operation) starts from where
    the operation is. An operation that already ended gets its state and its
    status at once.
    """
    app_services = services()
    runner = app_services.operations
    await runner.get(operation_id)  # NotFound refuses the handshake with 404
    async with app_services.store.subscribe(progress_channel(operation_id)) as messages:
        await websocket.accept()
        with app_services.long_lived():
            record = await runner.get(operation_id)
            await _send({"type": "progress_update", "data": record["progress"]})
            if record["status"] in FINISHED:
                await _send({"type": "status", "data": record})
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain_client)
                async for message in messages:
                    if message.get("type") == "progress_update":
                        await _send(message)
                    elif message.get("type") == "status":
                        await _send(message)
                        if message["data"]["status"] in FINISHED:
                            break
                nursery.cancel_scope.cancel()


async def _drain_client() -> None:
    """Read (and ignore) what the client sends, so its close frame is seen."""
    while True:
        await websocket.receive()
