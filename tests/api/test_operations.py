"""The operation routes over the wire: start, follow, cancel, resume, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from autobot import Settings
from autobot.api import create_app
from autobot.operations import OPERATION_TYPES, PROFILE_FIELDS
from tests.support.polling import eventually
from tests.support.serving import served

FINISHED = ("completed", "failed", "cancelled", "timed_out")
# A built-in type whose items are timed samples: slow enough to watch and cancel.
SLOW = {"type": "monitoring_collection", "params": {"samples": 40, "interval_s": 0.05}}


@asynccontextmanager
async def operations_server(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "files").mkdir(exist_ok=True)
    async with served(create_app(Settings(data_dir=tmp_path, **settings))) as client:
        yield client


def ws_url(client: httpx.AsyncClient, operation_id: str) -> str:
    base = str(client.base_url).replace("http://", "ws://")
    return f"{base}/api/operations/{operation_id}/progress"


async def start(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/api/operations", json=body)
    assert response.status_code == 202, response.text
    return response.json()["operation_id"]


async def reaches(client: httpx.AsyncClient, operation_id: str, *statuses: str) -> dict[str, Any]:
    wanted = statuses or FINISHED

    async def check() -> dict[str, Any] | None:
        record = (await client.get(f"/api/operations/{operation_id}")).json()
        return record if record["status"] in wanted else None

    with trio.fail_after(15):
        return await eventually(check)


async def follow(url: str) -> list[dict[str, Any]]:
    """Every message of the progress WebSocket until the server closes it."""
    messages = []
    async with trio_websocket.open_websocket_url(url) as ws:
        with trio.fail_after(15):
            try:
                while True:
                    messages.append(json.loads(await ws.get_message()))
            except trio_websocket.ConnectionClosed:
                pass
    return messages


async def test_types_lists_all_seventeen_with_their_profiles(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        response = await client.get("/api/operations/types")
    assert response.status_code == 200
    types = response.json()["types"]
    assert {t["type"] for t in types} >= set(OPERATION_TYPES)
    for entry in types:
        assert set(entry["profile"]) == set(PROFILE_FIELDS)


async def test_a_toml_override_shows_in_the_types(tmp_path: Path) -> None:
    overrides = {"codebase_indexing": {"base_s": 60, "per_item_s": 0.5, "max_s": 3600}}
    async with operations_server(tmp_path, operation_profiles=overrides) as client:
        types = (await client.get("/api/operations/types")).json()["types"]
    (indexing,) = [t for t in types if t["type"] == "codebase_indexing"]
    assert indexing["profile"]["base_s"] == 60
    assert indexing["profile"]["per_item_s"] == 0.5
    assert indexing["profile"]["max_s"] == 3600


async def test_progress_streams_to_100_percent_and_ends_with_the_status(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        operation_id = await start(client, SLOW)
        messages = await follow(ws_url(client, operation_id))
        record = (await client.get(f"/api/operations/{operation_id}")).json()
    updates = [m["data"] for m in messages if m["type"] == "progress_update"]
    assert messages[-1]["type"] == "status"
    assert messages[-1]["data"]["status"] == "completed"
    assert messages[-1]["data"]["progress"]["status_message"] == "completed"
    assert len(updates) >= 3
    assert updates[-1]["progress_percentage"] == 100.0
    assert updates[-1]["processed_items"] == updates[-1]["total_items"] == 40
    percentages = [u["progress_percentage"] for u in updates]
    assert percentages == sorted(percentages)
    assert record["status"] == "completed" and record["attempts"] == 1
    assert record["deadline_s"] > 0


async def test_a_late_client_gets_the_current_state_then_the_status(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        operation_id = await start(client, {**SLOW, "params": {"samples": 3, "interval_s": 0}})
        await reaches(client, operation_id)
        messages = await follow(ws_url(client, operation_id))
    assert [m["type"] for m in messages] == ["progress_update", "status"]
    assert messages[0]["data"]["progress_percentage"] == 100.0
    assert messages[1]["data"]["status"] == "completed"


async def test_cancel_then_resume_over_the_api(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        operation_id = await start(client, SLOW)
        await reaches(client, operation_id, "running")
        with trio.fail_after(1):
            cancelled = await client.post(f"/api/operations/{operation_id}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        again = await client.post(f"/api/operations/{operation_id}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "operation_finished"
        assert again.json()["error"]["operation_status"] == "cancelled"
        resumed = await client.post(f"/api/operations/{operation_id}/resume")
        assert resumed.status_code == 202
        done = await reaches(client, operation_id)
        assert done["status"] == "completed" and done["attempts"] == 2
        refused = await client.post(f"/api/operations/{operation_id}/resume")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "operation_not_resumable"


async def test_list_filters_and_takes_the_trailing_slash(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        first = await start(client, {**SLOW, "params": {"samples": 1, "interval_s": 0}})
        await reaches(client, first)
        for path in ("/api/operations", "/api/operations/"):
            listed = await client.get(path, params={"status": "completed"})
            assert listed.status_code == 200
            assert [op["id"] for op in listed.json()["operations"]] == [first]
        by_type = await client.get("/api/operations/", params={"type": "security_scan"})
        assert by_type.json()["operations"] == []
        bad = await client.get("/api/operations/", params={"status": "done"})
        assert bad.status_code == 422


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"type": "no_such_type"}, 422, "unknown_operation_type"),
        ({"type": "MONITORING_COLLECTION"}, 422, "unknown_operation_type"),
        ({**SLOW, "priority": "urgent"}, 422, "validation_error"),
        ({**SLOW, "priority": "HIGH"}, 422, "validation_error"),
        ({**SLOW, "estimated_items": -1}, 422, "validation_error"),
        ({**SLOW, "estimated_items": "5"}, 422, "validation_error"),
        ({"type": "monitoring_collection", "params": {"samples": "many"}}, 422, "validation_error"),
        ({"type": "security_scan", "params": {"path": "../etc"}}, 400, "path_outside_root"),
        ({"type": "security_scan", "params": {"path": "/etc"}}, 400, "path_outside_root"),
        ({"type": "security_scan", "params": {"path": "missing"}}, 404, "file_not_found"),
    ],
)
async def test_bad_starts_are_refused_in_the_error_shape(
    tmp_path: Path, body: dict[str, Any], status: int, code: str
) -> None:
    async with operations_server(tmp_path) as client:
        response = await client.post("/api/operations", json=body)
        listed = (await client.get("/api/operations")).json()["operations"]
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert listed == []


async def test_the_named_routes_refuse_escapes_and_missing_paths(tmp_path: Path) -> None:
    routes = [
        "/api/operations/codebase/index",
        "/api/operations/security/scan",
        "/api/operations/knowledge-base/populate",
        "/api/operations/testing/comprehensive",
    ]
    async with operations_server(tmp_path) as client:
        for route in routes:
            outside = await client.post(route, json={"path": "a/../../x"})
            assert outside.status_code == 400, route
            assert outside.json()["error"]["code"] == "path_outside_root"
            missing = await client.post(route, json={"path": "nowhere"})
            assert missing.status_code == 404, route
            assert missing.json()["error"]["code"] == "file_not_found"


async def test_unknown_ids_are_404_operation_not_found(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        for response in (
            await client.get("/api/operations/nope"),
            await client.post("/api/operations/nope/cancel"),
            await client.post("/api/operations/nope/resume"),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "operation_not_found"
        with pytest.raises(trio_websocket.HandshakeError):
            await follow(ws_url(client, "nope"))


async def test_the_named_routes_start_their_type(tmp_path: Path) -> None:
    tree = tmp_path / "files" / "src"
    tree.mkdir(parents=True)
    (tree / "app.py").write_text("def main():\n    return eval('1')\n")
    routes = {
        "/api/operations/codebase/index": "codebase_indexing",
        "/api/operations/security/scan": "security_scan",
        "/api/operations/knowledge-base/populate": "kb_population",
    }
    async with operations_server(tmp_path) as client:
        for route, type_name in routes.items():
            response = await client.post(route, json={"path": "src", "priority": "high"})
            assert response.status_code == 202, response.text
            operation = response.json()["operation"]
            assert operation["type"] == type_name
            assert operation["priority"] == "high"
            done = await reaches(client, response.json()["operation_id"])
            assert done["status"] == "completed", done


async def test_metrics_count_runs_and_the_queue(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        operation_id = await start(client, {**SLOW, "params": {"samples": 2, "interval_s": 0}})
        await reaches(client, operation_id)
        text = (await client.get("/api/metrics")).text
    assert 'autobot_operation_runs_total{status="completed",type="monitoring_collection"} 1.0' in (
        text
    )
    assert 'autobot_operations{state="running"} 0.0' in text


async def test_a_backup_with_its_defaults_makes_its_directory(tmp_path: Path) -> None:
    async with operations_server(tmp_path) as client:
        operation_id = await start(client, {"type": "backup_operation"})
        done = await reaches(client, operation_id)
    assert done["status"] == "completed", done
    (backup,) = (tmp_path / "files" / "backups").glob("autobot-*.jsonl")
    assert done["result"]["path"] == f"backups/{backup.name}"
