"""The knowledge routes over the wire, on both backends, and two apps sharing one Redis."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from autobot import Settings
from autobot.api import create_app
from autobot.knowledge import MAX_METADATA_BYTES, MAX_TEXT_CHARS, KnowledgeBase
from tests.support.polling import eventually
from tests.support.redis_server import RedisProcess
from tests.support.serving import served


@asynccontextmanager
async def kb_server(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, KnowledgeBase]]:
    """The app on a real port with its index built, its client, and its knowledge base."""
    app = create_app(settings)
    async with served(app) as client:
        base: KnowledgeBase = app.extensions["autobot.services"].knowledge
        with trio.fail_after(10):
            await eventually(lambda: ready(base))
        yield client, base


async def ready(base: KnowledgeBase) -> bool:
    await trio.lowlevel.checkpoint()
    return base.index is not None


async def add(client: httpx.AsyncClient, text: str, **metadata: Any) -> str:
    response = await client.post("/api/knowledge/facts", json={"text": text, "metadata": metadata})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def search(client: httpx.AsyncClient, q: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/knowledge/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "keyword"
    return response.json()["results"]


async def ids(client: httpx.AsyncClient, q: str) -> list[str]:
    return [hit["id"] for hit in await search(client, q)]


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [item["field"] for item in response.json()["error"]["fields"]]


async def test_add_get_delete(backend_settings: Settings) -> None:
    async with kb_server(backend_settings) as (client, _):
        fact_id = await add(client, "Turbines spin in the wind.", source="notes")
        got = (await client.get(f"/api/knowledge/facts/{fact_id}")).json()
        assert got["id"] == fact_id
        assert got["text"] == "Turbines spin in the wind."
        assert got["metadata"] == {"source": "notes"}
        assert got["created_at"].endswith("Z")
        assert (await client.delete(f"/api/knowledge/facts/{fact_id}")).status_code == 204
        missing = await client.get(f"/api/knowledge/facts/{fact_id}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "fact_not_found"
        again = await client.delete(f"/api/knowledge/facts/{fact_id}")
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "fact_not_found"


async def test_the_limits_answer_422_with_fields(settings: Settings) -> None:
    async with kb_server(settings) as (client, _):
        post = client.post
        assert await add(client, "x" * MAX_TEXT_CHARS)
        too_long = await post("/api/knowledge/facts", json={"text": "x" * (MAX_TEXT_CHARS + 1)})
        assert fields(too_long) == ["text"]
        assert fields(await post("/api/knowledge/facts", json={"text": ""})) == ["text"]
        assert fields(await post("/api/knowledge/facts", json={"text": "  \n"})) == ["text"]
        assert fields(await post("/api/knowledge/facts", json={"text": 5})) == ["text"]
        big = {"k": "v" * (MAX_METADATA_BYTES - 8)}  # {"k":"…"} is 8 bytes more
        assert await add(client, "fits", **big)
        bigger = {"text": "t", "metadata": {"k": "v" * (MAX_METADATA_BYTES - 7)}}
        assert fields(await post("/api/knowledge/facts", json=bigger)) == ["metadata"]
        listed = {"text": "t", "metadata": [1, 2]}
        assert fields(await post("/api/knowledge/facts", json=listed)) == ["metadata"]


async def test_a_batch_is_stored_all_or_none(backend_settings: Settings) -> None:
    async with kb_server(backend_settings) as (client, base):
        post = client.post
        facts = [{"text": f"batch fact {n} about gearboxes"} for n in range(1000)]
        stored = await post("/api/knowledge/facts/batch", json={"facts": facts})
        assert stored.status_code == 201, stored.text
        stored_ids = stored.json()["ids"]
        assert len(set(stored_ids)) == 1000
        got = await client.get(f"/api/knowledge/facts/{stored_ids[17]}")
        assert got.json()["text"] == "batch fact 17 about gearboxes"
        too_many = await post("/api/knowledge/facts/batch", json={"facts": facts + facts[:1]})
        assert fields(too_many) == ["facts"]
        assert fields(await post("/api/knowledge/facts/batch", json={"facts": []})) == ["facts"]
        one_bad = [{"text": "fine"}, {"text": ""}, {"text": "also fine"}]
        refused = await post("/api/knowledge/facts/batch", json={"facts": one_bad})
        assert fields(refused) == ["facts.1.text"]
        assert len(await base._store_of().list_facts()) == 1000
        assert await ids(client, "fine") == []


async def test_search_ranks_and_stems(backend_settings: Settings) -> None:
    async with kb_server(backend_settings) as (client, _):
        thrice = await add(client, "Redis replicas follow the Redis primary; Redis sentinels.")
        once = await add(client, "Redis keeps the queue; the workers poll it.", topic="queue")
        await add(client, "Postgres keeps the accounts.")
        running = await add(client, "The service runs every night.")
        results = await search(client, "redis")
        assert [hit["id"] for hit in results] == [thrice, once]
        assert results[0]["score"] > results[1]["score"] > 0
        assert results[1]["metadata"] == {"topic": "queue"}
        assert results[1]["text"] == "Redis keeps the queue; the workers poll it."
        assert await ids(client, "running") == [running]
        assert len(await search(client, "redis keeps", limit=1)) == 1


async def test_search_parameters(settings: Settings) -> None:
    async with kb_server(settings) as (client, _):
        get = client.get
        assert fields(await get("/api/knowledge/search", params={"q": " "})) == ["q"]
        assert fields(await get("/api/knowledge/search", params={"q": ""})) == ["q"]
        assert fields(await get("/api/knowledge/search")) == ["q"]
        for limit in ("0", "101", "ten"):
            response = await get("/api/knowledge/search", params={"q": "a", "limit": limit})
            assert fields(response) == ["limit"]
        for mode in ("semantic", "hybrid"):
            response = await get("/api/knowledge/search", params={"q": "a", "mode": mode})
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "embeddings_not_configured"
        assert (
            await get("/api/knowledge/search", params={"q": "a", "mode": "x"})
        ).status_code == 422
        assert await search(client, "a", mode="keyword", limit=100) == []


async def test_search_expiry_is_504_naming_kb_search(settings: Settings) -> None:
    settings = dataclasses.replace(settings, deadlines={"kb.search": 0.000_001})
    async with kb_server(settings) as (client, _):
        await add(client, "turbines")
        response = await client.get("/api/knowledge/search", params={"q": "turbines"})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "deadline_exceeded"
        assert response.json()["error"]["scope"] == "kb.search"


async def test_a_deleted_fact_is_never_returned(backend_settings: Settings) -> None:
    async with kb_server(backend_settings) as (client, base):
        gone = await add(client, "gearbox oil")
        kept = await add(client, "gearbox teeth")
        # Deleted behind the index's back: the store has the last word.
        await base._store_of().delete_fact(gone)
        assert await ids(client, "gearbox") == [kept]
        await client.delete(f"/api/knowledge/facts/{kept}")
        assert await ids(client, "gearbox") == []


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/api/health")).json()


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
async def test_the_index_is_rebuilt_after_damage(settings: Settings, damage: str) -> None:
    async with kb_server(settings) as (client, base):
        fact_id = await add(client, "The service runs every night.")
        assert (await health(client))["checks"]["knowledge"]["ok"] is True
        index = base.index
        assert index is not None
        directory = index.directory
        if damage == "deleted":
            # Moved away first: the index's writer may still be tidying its files.
            gone = directory.with_name(directory.name + "-gone")
            directory.rename(gone)
            shutil.rmtree(gone, ignore_errors=True)
        else:
            for path in directory.iterdir():
                path.write_bytes(b"\x00garbage")
        rebuilds = base.rebuilds

        async def rebuilt() -> bool:
            # Searches answer all along, from the store while the index is rebuilt.
            assert await ids(client, "service") == [fact_id]
            return base.rebuilds > rebuilds and base.index is not None

        with trio.fail_after(10):
            await eventually(rebuilt)
        assert await ids(client, "running") == [fact_id]  # stemmed: the index again
        assert (await health(client))["checks"]["knowledge"]["ok"] is True


async def test_two_apps_on_one_redis_stay_in_step(
    shared_redis: RedisProcess, tmp_path: pathlib.Path, settings: Settings
) -> None:
    shared_redis.command("FLUSHALL")
    first = dataclasses.replace(settings, data_dir=tmp_path / "one", redis_url=shared_redis.url)
    second = dataclasses.replace(first, data_dir=tmp_path / "two")
    async with kb_server(first) as (one, _), kb_server(second) as (two, _):
        fact_id = await add(one, "Sentinels watch the primary.")
        with trio.fail_after(1):
            await eventually(lambda: ids(two, "sentinel"))
        assert await ids(two, "sentinel") == [fact_id]
        batch = await two.post("/api/knowledge/facts/batch", json={"facts": [{"text": "gearbox"}]})
        with trio.fail_after(1):
            await eventually(lambda: ids(one, "gearboxes"))
        assert await ids(one, "gearboxes") == batch.json()["ids"]
        assert (await two.delete(f"/api/knowledge/facts/{fact_id}")).status_code == 204
        assert await ids(one, "sentinel") == []
        assert await ids(two, "sentinel") == []
