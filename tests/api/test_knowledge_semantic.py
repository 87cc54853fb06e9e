"""Semantic and hybrid knowledge search through the API, with the fake LLM's embeddings."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from autobot import Settings
from autobot.api import create_app
from autobot.knowledge import KnowledgeBase
from tests.support.fake_llm import FakeLLM, Scenario
from tests.support.polling import eventually
from tests.support.serving import served

CORPUS = [
    "The lighthouse keeper trims the lamp wick every evening.",
    "Fog horns sound every thirty seconds in thick weather.",
    "Gearboxes need fresh oil after a thousand hours of running.",
    "The keeper's logbook records every passing ship.",
]


def semantic_settings(settings: Settings, fake_llm: FakeLLM) -> Settings:
    return dataclasses.replace(settings, llm_url=fake_llm.ollama_url, embed_model="fake-embed")


@asynccontextmanager
async def kb_server(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, KnowledgeBase]]:
    app = create_app(settings)
    async with served(app) as client:
        base: KnowledgeBase = app.extensions["autobot.services"].knowledge

        async def ready() -> bool:
            await trio.lowlevel.checkpoint()
            return (
                base.index is not None
                and base.semantic is not None
                and (base.semantic.vectors is not None)
            )

        with trio.fail_after(10):
            await eventually(ready)
        yield client, base


async def add_all(client: httpx.AsyncClient, texts: list[str]) -> list[str]:
    response = await client.post(
        "/api/knowledge/facts/batch", json={"facts": [{"text": text} for text in texts]}
    )
    assert response.status_code == 201, response.text
    return response.json()["ids"]


async def search(client: httpx.AsyncClient, q: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/knowledge/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def embedded(base: KnowledgeBase, count: int) -> bool:
    await trio.lowlevel.checkpoint()
    assert base.semantic is not None and base.semantic.vectors is not None
    return len(base.semantic.vectors) >= count


async def test_semantic_search_ranks_by_embedding(
    backend_settings: Settings, fake_llm: FakeLLM
) -> None:
    async with kb_server(semantic_settings(backend_settings, fake_llm)) as (client, base):
        ids = await add_all(client, CORPUS)
        with trio.fail_after(5):
            await eventually(lambda: embedded(base, len(CORPUS)))
        body = await search(client, "keeper lamp", mode="semantic")
        assert body["mode"] == "semantic"
        assert body["results"][0]["id"] == ids[0]
        scores = [hit["score"] for hit in body["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= score <= 1.0 for score in scores)
        # The facts' embeddings were asked for in one batch, the query on its own.
        embeds = [r.json() for r in fake_llm.requests if r.path == "/api/embed"]
        assert embeds[0]["input"] == CORPUS
        assert embeds[-1]["input"] == ["keeper lamp"]


async def test_hybrid_is_the_default_and_fuses_both_rankings(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with kb_server(semantic_settings(settings, fake_llm)) as (client, base):
        ids = await add_all(client, CORPUS)
        with trio.fail_after(5):
            await eventually(lambda: embedded(base, len(CORPUS)))
        body = await search(client, "keeper logbook ship")
        assert body["mode"] == "hybrid"
        assert "semantic_error" not in body
        assert body["results"][0]["id"] == ids[3]
        # The keeper's other fact is second: both halves rank it after the logbook.
        assert body["results"][1]["id"] == ids[0]
        keyword = await search(client, "keeper logbook ship", mode="keyword")
        assert keyword["results"][0]["id"] == ids[3]


async def test_a_deleted_fact_is_never_a_semantic_hit(
    backend_settings: Settings, fake_llm: FakeLLM
) -> None:
    async with kb_server(semantic_settings(backend_settings, fake_llm)) as (client, base):
        ids = await add_all(client, CORPUS)
        with trio.fail_after(5):
            await eventually(lambda: embedded(base, len(CORPUS)))
        assert (await client.delete(f"/api/knowledge/facts/{ids[0]}")).status_code == 204
        for mode in ("semantic", "hybrid"):
            found = [hit["id"] for hit in (await search(client, "lamp wick", mode=mode))["results"]]
            assert ids[0] not in found


async def test_with_the_provider_down_hybrid_answers_from_keywords(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with kb_server(semantic_settings(settings, fake_llm)) as (client, base):
        ids = await add_all(client, CORPUS)
        with trio.fail_after(5):
            await eventually(lambda: embedded(base, len(CORPUS)))
        await fake_llm.set_scenario(Scenario(embed_status=500))
        body = await search(client, "fog horns")
        assert body["mode"] == "hybrid"
        assert [hit["id"] for hit in body["results"]][:1] == [ids[1]]
        assert body["semantic_error"]["code"] == "llm_error"
        response = await client.get(
            "/api/knowledge/search", params={"q": "fog horns", "mode": "semantic"}
        )
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "llm_error"


@pytest.mark.slow
async def test_a_fact_added_while_embeddings_fail_is_embedded_later(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(embed_status=503))
    async with kb_server(semantic_settings(settings, fake_llm)) as (client, base):
        (fact_id,) = await add_all(client, ["Tide tables are printed every spring."])
        # Keyword-searchable at once, embedding or not.
        keyword = await search(client, "tides", mode="keyword")
        assert [hit["id"] for hit in keyword["results"]] == [fact_id]
        with trio.fail_after(5):
            await eventually(lambda: _failed_once(base))
        await fake_llm.set_scenario(Scenario())
        with trio.fail_after(10):
            await eventually(lambda: embedded(base, 1), interval_s=0.05)
        body = await search(client, "tide tables", mode="semantic")
        assert [hit["id"] for hit in body["results"]] == [fact_id]


async def _failed_once(base: KnowledgeBase) -> bool:
    await trio.lowlevel.checkpoint()
    assert base.semantic is not None
    return bool(base.semantic.last_error)


async def test_stored_embeddings_are_reused_after_a_restart(
    backend_settings: Settings, fake_llm: FakeLLM
) -> None:
    config = semantic_settings(backend_settings, fake_llm)
    async with kb_server(config) as (client, base):
        ids = await add_all(client, CORPUS)
        with trio.fail_after(5):
            await eventually(lambda: embedded(base, len(CORPUS)))
    asked = len([r for r in fake_llm.requests if r.path == "/api/embed"])
    async with kb_server(config) as (client, base):
        assert base.semantic is not None and base.semantic.vectors is not None
        assert len(base.semantic.vectors) == len(CORPUS)
        body = await search(client, "gearbox oil", mode="semantic")
        assert body["results"][0]["id"] == ids[2]
    # Only the query was embedded after the restart.
    assert len([r for r in fake_llm.requests if r.path == "/api/embed"]) == asked + 1


async def test_the_health_check_reports_the_semantic_index(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with kb_server(semantic_settings(settings, fake_llm)) as (client, base):
        await add_all(client, CORPUS)
        with trio.fail_after(5):
            await eventually(lambda: embedded(base, len(CORPUS)))
        check = (await client.get("/api/health")).json()["checks"]["knowledge"]
        assert check["ok"] is True
        assert check["facts"] == 4
        assert check["semantic"] == {"model": "fake-embed", "vectors": 4, "waiting": 0}
