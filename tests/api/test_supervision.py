"""Background services under supervision, on real parts: no zombie server.

A malformed pub/sub message used to end the Redis relay and with it the
store's task group (every write answered 503 while health said ok); an
``OSError`` while the journal rotated used to end the journal writer. Each is
now an outside fault: dropped or retried, and reported honestly.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re

import pytest
import trio

from autobot import Settings, run_health_checks
from autobot._supervisor import open_supervisor
from autobot.api import create_app
from autobot.storage import open_embedded_store
from autobot.storage._journal_format import encode_record
from tests.support.polling import eventually
from tests.support.redis_server import RedisProcess, RedisProcesses
from tests.support.serving import served


async def redis_command(server: RedisProcess, *args: str) -> object:
    return await trio.to_thread.run_sync(lambda: server.command(*args))


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else None


async def test_a_malformed_pubsub_message_is_dropped_and_the_server_goes_on(
    settings: Settings, shared_redis: RedisProcess
) -> None:
    await redis_command(shared_redis, "FLUSHALL")
    app = create_app(dataclasses.replace(settings, redis_url=shared_redis.url))
    services = app.extensions["autobot.services"]
    async with served(app) as client:
        async with services.store.subscribe("x") as messages:
            # What anyone with redis-cli can do: not JSON, and JSON that is not an object.
            for garbage in ("notjson", "42", '["a", "list"]'):
                await redis_command(shared_redis, "PUBLISH", "autobot:chan:x", garbage)
            await redis_command(shared_redis, "PUBLISH", "autobot:chan:x", '{"after": 1}')
            with trio.fail_after(5):
                assert await anext(messages) == {"after": 1}  # the relay is still relaying

        response = await client.post("/api/chats", json={"title": "still writable"})
        assert response.status_code == 201

        health = (await client.get("/api/health")).json()
        assert health["checks"]["storage"]["ok"] is True
        assert health["checks"]["redis"]["ok"] is True
        services_entry = health["checks"]["services"]
        assert services_entry["ok"] is True
        assert services_entry["services"]["storage.pubsub"] == {"status": "up", "restarts": 0}

        text = (await client.get("/api/metrics")).text
        dropped = "autobot_dropped_payloads_total"
        assert metric(text, dropped, source="storage.pubsub", reason="not_json") == 1
        assert metric(text, dropped, source="storage.pubsub", reason="not_an_object") == 2
        assert metric(text, "autobot_service_up", service="storage.pubsub") == 1


async def test_a_relay_that_cannot_subscribe_is_reported_and_comes_back(
    settings: Settings, tmp_path: pathlib.Path
) -> None:
    processes = RedisProcesses(tmp_path / "redis")
    server = processes.redis()
    server.kill()  # Redis is down when the server starts
    try:
        settings = dataclasses.replace(
            settings,
            redis_url=server.url,
            deadlines={"redis.connect": 0.2, "redis.command": 0.3},
        )
        app = create_app(settings)
        services = app.extensions["autobot.services"]
        async with served(app) as client:
            response = await client.get("/api/health")
            assert response.status_code == 200  # degraded: Redis comes back by itself
            health = response.json()
            assert health["status"] == "degraded"
            relay = health["checks"]["services"]["services"]["storage.pubsub"]
            assert relay["status"] == "restarting"
            assert "Redis" in relay["error"]
            assert "storage.pubsub restarting" in health["checks"]["services"]["error"]

            await trio.to_thread.run_sync(server.start)

            async def relay_up() -> dict | None:
                health = (await client.get("/api/health")).json()
                relay = health["checks"]["services"]["services"]["storage.pubsub"]
                return relay if relay["status"] == "up" else None

            with trio.fail_after(10):
                relay = await eventually(relay_up, interval_s=0.1)
            assert relay["restarts"] >= 1
            async with services.store.subscribe("y") as messages:
                await services.store.publish("y", {"back": True})
                with trio.fail_after(5):
                    assert await anext(messages) == {"back": True}
            text = (await client.get("/api/metrics")).text
            restarts = metric(text, "autobot_service_restarts_total", service="storage.pubsub")
            assert restarts is not None and restarts >= 1
    finally:
        processes.stop_all()


async def test_a_programming_error_in_a_service_stops_the_services_loudly(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)
    services = app.extensions["autobot.services"]

    async def buggy(  # noqa: ASYNC114 - started by the supervisor
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.lowlevel.checkpoint()
        raise KeyError("a record without an id")

    async with served(app) as client:
        assert (await client.post("/api/chats", json={})).status_code == 201
        await services.supervisor.start("buggy", buggy)
        with trio.fail_after(5):
            await services.crashed.wait()
            await services.stopped.wait()
        assert isinstance(services.fatal_error, KeyError)
        with pytest.raises(KeyError):  # what the server's nursery runs to exit non-zero
            await services.raise_on_crash()

        # Not a zombie that says it is fine: health is down, writes say why they fail.
        response = await client.get("/api/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "down"
        assert body["checks"]["services"]["error"] == (
            "the services crashed: KeyError: 'a record without an id'"
        )
        response = await client.post("/api/chats", json={})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"

    crashes = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage() for r in crashes] == [
        "service crashed: a programming error; the server stops"
    ]
    assert crashes[0].exc_info is not None and crashes[0].exc_info[0] is KeyError


# -- the embedded journal under supervision ----------------------------------------------
# The app's store always compacts at 64 MiB, so these run the store itself, with a
# small compact_after_bytes, under a real supervisor on a real file system.


async def test_a_failed_journal_rotation_is_reported_and_retried_while_writes_go_on(
    tmp_path: pathlib.Path,
) -> None:
    directory = tmp_path / "store"
    async with open_supervisor() as supervisor:
        async with open_embedded_store(
            directory, compact_after_bytes=2_000, supervisor=supervisor
        ) as store:
            # Where the next journal generation goes there is a directory: os.open fails.
            blocker = directory / "journal-000002.jsonl"
            blocker.mkdir()
            chat = await store.create_chat("rotating")
            for n in range(20):
                await store.append_message(chat.id, "user", f"{n}-" + "x" * 200)

            async def failure_reported() -> dict | None:
                report = await run_health_checks([supervisor.health_check, *store.health_checks()])
                return None if report.checks["services"]["ok"] else report.to_body()

            with trio.fail_after(5):
                report = await eventually(failure_reported)
            assert report["status"] == "degraded"  # writes work; only compaction is stuck
            assert report["checks"]["journal"]["ok"] is True
            compaction = report["checks"]["services"]["services"]["storage.compaction"]
            assert compaction["status"] == "restarting"
            assert compaction["error"].startswith("IsADirectoryError")
            assert report["checks"]["services"]["services"]["storage.journal"]["status"] == "up"

            await store.append_message(chat.id, "user", "written while compaction is down")
            blocker.rmdir()  # the fault goes away; the next attempt succeeds

            async def snapshot_written() -> bool:
                return (directory / "snapshot-000002.jsonl").exists()

            with trio.fail_after(10):
                await eventually(snapshot_written)
            (state,) = [s for s in supervisor.services() if s.name == "storage.compaction"]
            assert state.status == "up" and state.restarts >= 1
            await store.append_message(chat.id, "user", "after")

    async with open_embedded_store(directory) as store:
        contents = [m.content for m in await store.get_messages(chat.id)]
    assert len(contents) == 22
    assert contents[-2:] == ["written while compaction is down", "after"]


async def test_a_journal_record_of_an_unknown_kind_is_dropped_at_replay(
    tmp_path: pathlib.Path,
) -> None:
    directory = tmp_path / "store"
    async with open_embedded_store(directory) as store:
        chat = await store.create_chat("kept")
    (journal,) = directory.glob("journal-*.jsonl")
    with journal.open("ab") as file:  # a whole, checksummed line from a newer version
        file.write(encode_record({"kind": "from_the_future", "id": "x"}))
        file.write(encode_record({"no": "kind at all"}))
    async with open_supervisor() as supervisor:
        async with open_embedded_store(directory, supervisor=supervisor) as store:
            assert [c.id for c in await store.list_chats()] == [chat.id]
            await store.create_chat("and writable")
        assert supervisor.dropped[("storage.journal", "unknown_kind")] == 2
