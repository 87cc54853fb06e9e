"""Real server processes killed mid-operation: the work continues, nothing finished is redone."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from tests.support.polling import eventually
from tests.support.process import run_server
from tests.support.redis_server import RedisProcesses

pytestmark = pytest.mark.slow

TEST_FILES = 5
# Each test file takes a while and notes in runs.log that it ran to the end.
TEST_FILE = """\
import pathlib
import time


def test_slowly():
    time.sleep(0.4)
    with open(pathlib.Path(__file__).parent / "runs.log", "a") as log:
        log.write("{name}\\n")
"""


def plant_suite(data_dir: Path) -> Path:
    suite = data_dir / "files" / "suite"
    suite.mkdir(parents=True)
    for index in range(TEST_FILES):
        name = f"test_part{index}.py"
        (suite / name).write_text(TEST_FILE.format(name=name))
    return suite


def runs(suite: Path) -> list[str]:
    log = suite / "runs.log"
    return log.read_text().split() if log.exists() else []


async def reaches(client: httpx.AsyncClient, operation_id: str, *statuses: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        response = await client.get(f"/api/operations/{operation_id}")
        record = response.json()
        return record if record["status"] in statuses else None

    with trio.fail_after(30):
        return await eventually(check, interval_s=0.05)


async def start_suite(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/operations/testing/comprehensive", json={"path": "suite"})
    assert response.status_code == 202, response.text
    return response.json()["operation_id"]


async def until_runs(suite: Path, count: int) -> None:
    async def enough() -> bool:
        return len(runs(suite)) >= count

    with trio.fail_after(30):
        await eventually(enough, interval_s=0.02)


def assert_each_file_ran_to_the_end_once(suite: Path) -> None:
    ran = runs(suite)
    assert sorted(set(ran)) == sorted(f"test_part{i}.py" for i in range(TEST_FILES))
    # The file whose checkpoint was being saved as the process died may run twice.
    assert len(ran) <= TEST_FILES + 1, ran


async def test_a_killed_embedded_server_continues_the_operation_on_restart(
    tmp_path: Path,
) -> None:
    suite = plant_suite(tmp_path)
    environ = {"AUTOBOT_DATA_DIR": str(tmp_path)}
    async with run_server(environ) as server, httpx.AsyncClient(base_url=server.url) as client:
        operation_id = await start_suite(client)
        await until_runs(suite, 3)
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
    before = runs(suite)
    async with run_server(environ) as server, httpx.AsyncClient(base_url=server.url) as client:
        done = await reaches(client, operation_id, "completed", "failed")
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    assert done["result"]["totals"]["passed"] == TEST_FILES
    assert_each_file_ran_to_the_end_once(suite)
    assert runs(suite)[: len(before)] == before


async def test_another_process_on_redis_adopts_and_streams_the_operation(tmp_path: Path) -> None:
    suite = plant_suite(tmp_path)
    processes = RedisProcesses(tmp_path / "redis")
    redis = processes.redis()
    common = {
        "AUTOBOT_REDIS_URL": redis.url,
        "AUTOBOT_DATA_DIR": str(tmp_path),
        # Short leases keep the test quick; the default adoption time is in bench/.
        "AUTOBOT_DEADLINE_OPERATION_LEASE": "1.5",
        "AUTOBOT_DEADLINE_OPERATION_HEARTBEAT": "0.3",
    }
    try:
        async with (
            run_server(common) as owner,
            run_server(common) as other,
            httpx.AsyncClient(base_url=owner.url) as on_owner,
            httpx.AsyncClient(base_url=other.url) as on_other,
        ):
            operation_id = await start_suite(on_owner)
            url = other.url.replace("http://", "ws://") + f"/api/operations/{operation_id}/progress"
            messages: list[dict[str, Any]] = []
            async with trio_websocket.open_websocket_url(url) as ws:
                with trio.fail_after(30):
                    messages.append(json.loads(await ws.get_message()))
                    await until_runs(suite, 2)
                    owner.process.send_signal(signal.SIGKILL)
                    while messages[-1]["type"] != "status":
                        messages.append(json.loads(await ws.get_message()))
            done = (await on_other.get(f"/api/operations/{operation_id}")).json()
    finally:
        processes.stop_all()
    assert messages[-1]["data"]["status"] == "completed"
    assert done["status"] == "completed" and done["attempts"] == 2
    updates = [m["data"] for m in messages if m["type"] == "progress_update"]
    assert updates[-1]["progress_percentage"] == 100.0
    assert max(u["processed_items"] for u in updates) == TEST_FILES
    assert_each_file_ran_to_the_end_once(suite)


async def test_sigterm_leaves_the_operation_queued_and_the_restart_finishes_it(
    tmp_path: Path,
) -> None:
    suite = plant_suite(tmp_path)
    environ = {"AUTOBOT_DATA_DIR": str(tmp_path)}
    async with run_server(environ) as server, httpx.AsyncClient(base_url=server.url) as client:
        operation_id = await start_suite(client)
        await until_runs(suite, 2)
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await server.process.wait() == 0
        await server.drain()
    stopped = next(e for e in server.log if e.get("msg") == "operation run ended")
    assert stopped["ending"] == "interrupted"
    async with run_server(environ) as server, httpx.AsyncClient(base_url=server.url) as client:
        done = await reaches(client, operation_id, "completed", "failed")
    assert stopped["operation"] == operation_id and stopped["processed_items"] >= 1
    assert done["status"] == "completed" and done["attempts"] == 2
    assert_each_file_ran_to_the_end_once(suite)
