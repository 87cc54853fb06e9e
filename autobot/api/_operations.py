"""Long-running operation routes: start, list, read, cancel, resume, follow progress."""

from __future__ import annotations

import json
from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, websocket
from quart_schema import validate_querystring, validate_request

from ..operations import (
    FINISHED,
    OPERATION_TYPES,
    OperationPriority,
    OperationRunner,
    OperationStatus,
    progress_channel,
)
from ._context import services

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
async def start_operation(data: StartOperation) -> tuple[dict, int]:
    """Start an operation of any registered type (see ``GET /api/operations/types``)."""
    return await _start(data.type, data, data.params or {})


@operations.post("/api/operations/codebase/index")
@validate_request(StartOnPatterns)
async def index_codebase(data: StartOnPatterns) -> tuple[dict, int]:
    return await _start("codebase_indexing", data, _params_of(data))


@operations.post("/api/operations/security/scan")
@validate_request(StartOnPath)
async def scan_security(data: StartOnPath) -> tuple[dict, int]:
    return await _start("security_scan", data, _params_of(data))


@operations.post("/api/operations/knowledge-base/populate")
@validate_request(StartOnPatterns)
async def populate_knowledge_base(data: StartOnPatterns) -> tuple[dict, int]:
    return await _start("kb_population", data, _params_of(data))


@operations.post("/api/operations/testing/comprehensive")
@validate_request(StartOnPath)
async def run_test_suite(data: StartOnPath) -> tuple[dict, int]:
    return await _start("comprehensive_test_suite", data, _params_of(data))


@operations.get("/api/operations/types")
async def operation_types() -> dict[str, Any]:
    """Every type's timeout profile and, once items ran, what they took."""
    return {"types": _runner().describe_types(), "contract_types": list(OPERATION_TYPES)}


@operations.get("/api/operations")
@operations.get("/api/operations/")
@validate_querystring(OperationListQuery)
async def list_operations(query_args: OperationListQuery) -> dict[str, Any]:
    status = None if query_args.status is None else query_args.status.value
    return {"operations": await _runner().list(status, query_args.type)}


@operations.get("/api/operations/<operation_id>")
async def get_operation(operation_id: str) -> dict[str, Any]:
    return await _runner().get(operation_id)


@operations.post("/api/operations/<operation_id>/cancel")
async def cancel_operation(operation_id: str) -> dict[str, Any]:
    return await _runner().cancel(operation_id)


@operations.post("/api/operations/<operation_id>/resume")
async def resume_operation(operation_id: str) -> tuple[dict, int]:
    return await _runner().resume(operation_id), 202


async def _send(message: dict[str, Any]) -> None:
    await websocket.send(json.dumps(message, ensure_ascii=False, separators=(",", ":")))


@operations.websocket("/api/operations/<operation_id>/progress")
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
