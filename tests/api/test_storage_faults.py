"""What clients see when the storage backend is unavailable."""

from __future__ import annotations

import dataclasses

import trio

from autobot import Settings
from autobot.api import create_app
from autobot.api._context import services
from tests.support.polling import eventually
from tests.support.redis_server import RedisProcesses
from tests.support.serving import served


def app_with_chat_route(settings: Settings):
    app = create_app(settings)

    @app.get("/api/test/chats/<chat_id>")
    async def get_chat(chat_id: str) -> dict:
        return (await services().store.get_chat(chat_id)).to_json()

    return app


async def test_redis_down_is_503_and_degraded_then_recovers(
    settings: Settings, tmp_path, set_deadlines
) -> None:
    processes = RedisProcesses(tmp_path / "redis")
    server = processes.redis()
    try:
        settings = dataclasses.replace(
            settings,
            redis_url=server.url,
            deadlines={"redis.connect": 0.2, "redis.command": 0.3},
        )
        async with served(app_with_chat_route(settings)) as client:
            health = (await client.get("/api/health")).json()
            assert health["checks"]["redis"] == {
                **health["checks"]["redis"],
                "ok": True,
                "breaker": "closed",
            }
            assert health["checks"]["storage"]["backend"] == "redis"
            assert (await client.get("/api/test/chats/nope")).status_code == 404

            server.kill()
            started = trio.current_time()
            response = await client.get("/api/test/chats/nope")
            assert trio.current_time() - started < 1.0
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "redis_unavailable"

            response = await client.get("/api/health")
            assert response.status_code == 200
            health = response.json()
            assert health["status"] == "degraded"
            assert health["checks"]["redis"]["ok"] is False
            assert health["checks"]["storage"]["ok"] is True

            server.start()

            async def redis_healthy() -> bool:
                return (await client.get("/api/health")).json()["checks"]["redis"]["ok"]

            with trio.fail_after(15):
                await eventually(redis_healthy, interval_s=0.2)
            assert (await client.get("/api/test/chats/nope")).status_code == 404
    finally:
        processes.stop_all()


async def test_store_locked_by_another_process_is_down_until_freed(settings: Settings) -> None:
    from autobot.storage import open_embedded_store, store_directory

    release = trio.Event()

    async def hold_the_store(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_embedded_store(store_directory(settings)):
            task_status.started()
            await release.wait()

    async with trio.open_nursery() as nursery:
        await nursery.start(hold_the_store)
        async with served(app_with_chat_route(settings)) as client:
            response = await client.get("/api/health")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "down"
            assert "in use by another AutoBot process" in body["checks"]["storage"]["error"]
            response = await client.get("/api/test/chats/x")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "storage_unavailable"

            release.set()  # the other holder lets go: the app opens the store by itself

            async def serving() -> bool:
                return (await client.get("/api/health")).status_code == 200

            with trio.fail_after(10):
                await eventually(serving, interval_s=0.1)
            response = await client.get("/api/test/chats/x")
            assert response.json()["error"]["code"] == "chat_not_found"


async def test_frozen_redis_is_503_naming_the_deadline(settings: Settings, tmp_path) -> None:
    processes = RedisProcesses(tmp_path / "redis")
    server = processes.redis()
    try:
        settings = dataclasses.replace(
            settings, redis_url=server.url, deadlines={"redis.command": 0.3}
        )
        async with served(app_with_chat_route(settings)) as client:
            assert (await client.get("/api/test/chats/nope")).status_code == 404
            server.freeze()
            try:
                started = trio.current_time()
                response = await client.get("/api/test/chats/nope")
                elapsed = trio.current_time() - started
            finally:
                server.thaw()
            assert response.status_code == 503
            error = response.json()["error"]
            assert (error["code"], error["scope"], error["deadline_s"]) == (
                "redis_unavailable",
                "redis.command",
                0.3,
            )
            assert 0.3 <= elapsed < 1.0
            assert (await client.get("/api/test/chats/nope")).status_code == 404
    finally:
        processes.stop_all()
