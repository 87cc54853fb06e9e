"""Two server processes on one real redis-server keep their knowledge indexes in step."""

from __future__ import annotations

import httpx
import pytest
import trio

from tests.support.polling import eventually
from tests.support.process import run_server
from tests.support.redis_server import RedisProcesses


async def found(client: httpx.AsyncClient, query: str) -> list[str]:
    response = await client.get("/api/knowledge/search", params={"q": query, "mode": "keyword"})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


async def add(client: httpx.AsyncClient, text: str) -> str:
    response = await client.post("/api/knowledge/facts", json={"text": text})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.slow
async def test_adds_and_deletes_reach_the_other_process(tmp_path) -> None:
    processes = RedisProcesses(tmp_path / "redis")
    redis = processes.redis()
    common = {"AUTOBOT_REDIS_URL": redis.url, "AUTOBOT_DATA_DIR": str(tmp_path / "data")}
    try:
        async with (
            run_server(common) as one,
            run_server(common) as other,
            httpx.AsyncClient(base_url=one.url, timeout=None) as on_one,
            httpx.AsyncClient(base_url=other.url, timeout=None) as on_other,
        ):

            async def ready(client: httpx.AsyncClient) -> bool:
                health = (await client.get("/api/health")).json()
                return health["checks"]["knowledge"]["ok"] is True

            for client in (on_one, on_other):
                with trio.fail_after(10):
                    await eventually(lambda client=client: ready(client), interval_s=0.02)

            # Added on one: searchable on the other within a second (stemmed: the index).
            fact_id = await add(on_one, "Sentinels watch the primary and promote a replica.")
            with trio.fail_after(1):
                await eventually(lambda: found(on_other, "sentinel"), interval_s=0.01)
            assert await found(on_other, "promoting") == [fact_id]

            # Deleted on the other: the first never returns it, even before its index
            # has heard of the delete.
            assert (await on_other.delete(f"/api/knowledge/facts/{fact_id}")).status_code == 204
            assert await found(on_one, "sentinel") == []
            assert await found(on_other, "sentinel") == []

            # A batch added on the other reaches the first whole.
            response = await on_other.post(
                "/api/knowledge/facts/batch",
                json={"facts": [{"text": f"gearbox number {n}"} for n in range(50)]},
            )
            assert response.status_code == 201
            batch = set(response.json()["ids"])

            async def all_found() -> bool:
                response = await on_one.get(
                    "/api/knowledge/search", params={"q": "gearboxes", "limit": 100}
                )
                return {hit["id"] for hit in response.json()["results"]} == batch

            with trio.fail_after(1):
                await eventually(all_found, interval_s=0.01)
    finally:
        processes.stop_all()
