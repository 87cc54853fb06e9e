"""Answers grounded in the knowledge base: facts to the model, sources on the stored answer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from autobot import Settings
from autobot.api import create_app
from autobot.knowledge import KnowledgeBase
from tests.api.test_chat_websocket import receive, receive_until_final, ws_url
from tests.api.test_chats import answer_stored, messages_of, new_chat, parse_sse
from tests.support.fake_llm import FakeLLM, Scenario
from tests.support.polling import eventually
from tests.support.serving import served

QUESTION = "Why do turbines spin?"
FACTS = {
    "best": "Turbines spin when the wind turns their blades; turbines spin faster in storms.",
    "second": "The turbines of the north field were serviced in May.",
    "unrelated": "Postgres keeps the accounts.",
}


@asynccontextmanager
async def grounded_server(
    settings: Settings, fake: FakeLLM, *, deadlines: dict[str, float] | None = None, **more: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real port, talking to ``fake``, with its keyword index built."""
    settings = dataclasses.replace(
        settings, llm_url=fake.url("ollama"), deadlines=deadlines or {}, **more
    )
    app = create_app(settings)
    async with served(app) as client:
        base: KnowledgeBase = app.extensions["autobot.services"].knowledge

        async def ready() -> bool:
            await trio.lowlevel.checkpoint()
            return base.index is not None

        with trio.fail_after(10):
            await eventually(ready)
        yield client


async def add_facts(client: httpx.AsyncClient, facts: dict[str, str]) -> dict[str, str]:
    ids = {}
    for name, text in facts.items():
        response = await client.post("/api/knowledge/facts", json={"text": text})
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids


async def search_ids(client: httpx.AsyncClient, q: str, limit: int) -> list[str]:
    response = await client.get("/api/knowledge/search", params={"q": q, "limit": limit})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def fact_messages(fake: FakeLLM) -> list[dict[str, str]]:
    """The system messages of the fake's last chat request that list facts."""
    sent = fake.requests[-1].json()["messages"]
    return [m for m in sent if m["role"] == "system" and "[fact " in m["content"]]


def without_knowledge_fields(message: dict[str, Any]) -> None:
    assert "sources" not in message
    assert "knowledge_error" not in message


# -- the facts reach the model, the answer names them ----------------------------------------------


@pytest.mark.slow  # two servers, one after the other
async def test_facts_reach_the_model_and_the_stored_answer_names_them(
    backend_settings: Settings, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Wind ", "[fact]"]))
    async with grounded_server(backend_settings, fake_llm) as client:
        ids = await add_facts(client, FACTS)
        expected = await search_ids(client, QUESTION, 5)
        assert expected == [ids["best"], ids["second"]]
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages", json={"content": QUESTION, "knowledge": True}
        )
        assert response.status_code == 200, response.text
        message = response.json()["message"]
        assert message["content"] == "Wind [fact]"
        assert [source["id"] for source in message["sources"]] == expected
        scores = [source["score"] for source in message["sources"]]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
        assert set(message["sources"][0]) == {"id", "score"}
        assert "knowledge_error" not in message

        sent = fake_llm.requests[-1].json()["messages"]
        # The facts come right before the question they were found for.
        assert sent[-1] == {"role": "user", "content": QUESTION}
        context = sent[-2]
        assert context["role"] == "system"
        for name in ("best", "second"):
            assert f"[fact {ids[name]}] {FACTS[name]}" in context["content"]
        assert ids["unrelated"] not in context["content"]
        assert FACTS["unrelated"] not in context["content"]
        assert context["content"].index(ids["best"]) < context["content"].index(ids["second"])
        assert "cite" in context["content"]

        stored = await messages_of(client, chat_id)
        assert stored[-1] == message
        without_knowledge_fields(stored[0])  # the user's message carries neither

    # Read back after a restart: from the journal, or from Redis.
    async with grounded_server(backend_settings, fake_llm) as client:
        assert (await messages_of(client, chat_id))[-1] == message


async def test_at_most_kb_context_facts_go_to_the_model(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    # The limit is under test, not the budget: a loaded machine must not expire the search.
    roomy = {"kb.answer_context": 10.0}
    async with grounded_server(settings, fake_llm, kb_context_facts=2, deadlines=roomy) as client:
        for n in range(4):
            await add_facts(client, {"f": f"Gearbox note {n}: the gearbox hums."})
        chat_id = await new_chat(client)
        body = {"content": "Why does the gearbox hum?", "knowledge": True}

        async def all_four_found() -> bool:
            return len(await search_ids(client, body["content"], 10)) == 4

        with trio.fail_after(10):
            await eventually(all_four_found)
        message = (await client.post(f"/api/chats/{chat_id}/messages", json=body)).json()
        sources = message["message"]["sources"]
        assert [s["id"] for s in sources] == await search_ids(client, body["content"], 2)
        assert len(sources) == 2
        (context,) = fact_messages(fake_llm)
        assert context["content"].count("] Gearbox note") == 2


async def test_a_later_turn_keeps_the_history_first(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["ok"]))
    async with grounded_server(settings, fake_llm) as client:
        await add_facts(client, FACTS)
        chat_id = await new_chat(client)
        await client.post(f"/api/chats/{chat_id}/messages", json={"content": "hello"})
        body = {"content": QUESTION, "knowledge": True}
        await client.post(f"/api/chats/{chat_id}/messages", json=body)
        sent = fake_llm.requests[-1].json()["messages"]
        assert sent[:2] == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "ok"},
        ]
        assert sent[2]["role"] == "system" and "[fact " in sent[2]["content"]
        assert sent[3] == {"role": "user", "content": QUESTION}


async def test_no_matching_fact_means_no_context_and_empty_sources(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with grounded_server(settings, fake_llm) as client:
        await add_facts(client, {"unrelated": FACTS["unrelated"]})
        chat_id = await new_chat(client)
        body = {"content": "Tell me about volcanoes", "knowledge": True}
        message = (await client.post(f"/api/chats/{chat_id}/messages", json=body)).json()
        assert message["message"]["sources"] == []
        assert "knowledge_error" not in message["message"]
        assert fact_messages(fake_llm) == []


@pytest.mark.parametrize("knowledge", [False, None])
async def test_without_knowledge_no_facts_and_no_sources(
    backend_settings: Settings, fake_llm: FakeLLM, knowledge: bool | None
) -> None:
    async with grounded_server(backend_settings, fake_llm) as client:
        await add_facts(client, FACTS)
        chat_id = await new_chat(client)
        body: dict[str, Any] = {"content": QUESTION}
        if knowledge is not None:
            body["knowledge"] = knowledge
        response = await client.post(f"/api/chats/{chat_id}/messages", json=body)
        assert response.status_code == 200, response.text
        without_knowledge_fields(response.json()["message"])
        assert fake_llm.requests[-1].json()["messages"] == [{"role": "user", "content": QUESTION}]
        for stored in await messages_of(client, chat_id):
            without_knowledge_fields(stored)


# -- a slow or failing search costs the context, never the answer ------------------------------


@pytest.mark.parametrize("scope", ["kb.answer_context", "kb.search"])
async def test_an_expired_search_still_answers_with_knowledge_error(
    backend_settings: Settings, fake_llm: FakeLLM, scope: str
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["still ", "here"]))
    async with grounded_server(backend_settings, fake_llm, deadlines={scope: 1e-9}) as client:
        await add_facts(client, FACTS)
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages",
            json={"content": QUESTION, "knowledge": True, "stream": True},
        )
        assert response.status_code == 200
        events = parse_sse(response.text)
        assert "".join(data["delta"] for name, data in events if name == "token") == "still here"
        name, done = events[-1]
        assert name == "done"
        message = done["message"]
        assert (message["content"], message["status"]) == ("still here", "complete")
        assert message["sources"] == []
        error = message["knowledge_error"]
        assert error["code"] == "deadline_exceeded"
        assert error["scope"] == scope
        assert scope in error["message"]
        assert error["deadline_s"] == 1e-9
        assert fact_messages(fake_llm) == []
        assert fake_llm.requests[-1].json()["messages"][-1]["content"] == QUESTION
        assert (await messages_of(client, chat_id))[-1] == message


# -- the events carry the sources -----------------------------------------------------------


async def test_streamed_done_event_carries_the_sources(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with grounded_server(settings, fake_llm) as client:
        ids = await add_facts(client, FACTS)
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages",
            json={"content": QUESTION, "knowledge": True, "stream": True},
        )
        name, done = parse_sse(response.text)[-1]
        assert name == "done"
        assert [s["id"] for s in done["message"]["sources"]] == [ids["best"], ids["second"]]
        assert (await messages_of(client, chat_id))[-1] == done["message"]


async def test_a_cancelled_answer_keeps_its_sources(settings: Settings, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=1000, token_delay=0.01))
    async with grounded_server(settings, fake_llm) as client:
        ids = await add_facts(client, FACTS)
        chat_id = await new_chat(client)
        received = 0
        async with client.stream(
            "POST",
            f"/api/chats/{chat_id}/messages",
            json={"content": QUESTION, "knowledge": True, "stream": True},
        ) as response:
            async for chunk in response.aiter_text():
                received += chunk.count("event: token")
                if received >= 3:
                    break
        with trio.fail_after(5):
            stored = await eventually(lambda: answer_stored(client, chat_id))
        assert stored[-1]["status"] == "cancelled"
        assert [s["id"] for s in stored[-1]["sources"]] == [ids["best"], ids["second"]]


async def test_websocket_message_with_knowledge(
    backend_settings: Settings, fake_llm: FakeLLM
) -> None:
    async with grounded_server(backend_settings, fake_llm) as client:
        ids = await add_facts(client, FACTS)
        chat_id = await new_chat(client)
        async with trio_websocket.open_websocket_url(ws_url(client, chat_id)) as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "x", "knowledge": 1}))
            refused = await receive(ws)
            assert refused["type"] == "error"
            assert refused["error"]["code"] == "validation_error"
            assert [f["field"] for f in refused["error"]["fields"]] == ["knowledge"]
            assert await messages_of(client, chat_id) == []

            asked = {"type": "message", "content": QUESTION, "knowledge": True}
            await ws.send_message(json.dumps(asked))
            done = (await receive_until_final(ws))[-1]
            assert done["type"] == "done"
            assert [s["id"] for s in done["message"]["sources"]] == [ids["best"], ids["second"]]
            (context,) = fact_messages(fake_llm)
            assert f"[fact {ids['best']}] {FACTS['best']}" in context["content"]

            await ws.send_message(json.dumps({"type": "message", "content": QUESTION}))
            plain = (await receive_until_final(ws))[-1]
            without_knowledge_fields(plain["message"])
            assert fact_messages(fake_llm) == []
        stored = await messages_of(client, chat_id)
        assert stored[1] == done["message"]
        without_knowledge_fields(stored[3])


async def test_legacy_send_message_with_knowledge(
    backend_settings: Settings, fake_llm: FakeLLM
) -> None:
    async with grounded_server(backend_settings, fake_llm) as client:
        ids = await add_facts(client, FACTS)
        response = await client.post(
            "/api/send_message", json={"message": QUESTION, "knowledge": True}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [s["id"] for s in body["message"]["sources"]] == [ids["best"], ids["second"]]
        (context,) = fact_messages(fake_llm)
        assert f"[fact {ids['second']}] {FACTS['second']}" in context["content"]
        history = (await client.get(f"/api/history?chat_id={body['chat_id']}")).json()
        assert history["messages"][-1] == body["message"]

        plain = await client.post(
            "/api/send_message", json={"message": QUESTION, "chat_id": body["chat_id"]}
        )
        without_knowledge_fields(plain.json()["message"])
        refused = await client.post("/api/send_message", json={"message": "x", "knowledge": "yes"})
        assert refused.status_code == 422
        assert [f["field"] for f in refused.json()["error"]["fields"]] == ["knowledge"]


@pytest.mark.parametrize("knowledge", ["true", 1, 0, None, [], {}])
async def test_a_knowledge_flag_that_is_not_a_bool_is_422(
    settings: Settings, fake_llm: FakeLLM, knowledge: Any
) -> None:
    async with grounded_server(settings, fake_llm) as client:
        chat_id = await new_chat(client)
        response = await client.post(
            f"/api/chats/{chat_id}/messages", json={"content": "x", "knowledge": knowledge}
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert [f["field"] for f in error["fields"]] == ["knowledge"]
        assert await messages_of(client, chat_id) == []


def test_a_long_fact_is_cut_for_the_model() -> None:
    from autobot.chat._grounding import CONTEXT_FACT_CHARS, context_message
    from autobot.knowledge import SearchHit

    long = SearchHit("f1", "word " * 20_000, 1.0, {})
    short = SearchHit("f2", "a short fact", 0.5, {})
    content = context_message([long, short])["content"]
    first, second = content.split("\n\n")[-2:]
    assert first.startswith("[fact f1] word")
    assert first.endswith("…") and len(first) <= len("[fact f1] ") + CONTEXT_FACT_CHARS
    assert second == "[fact f2] a short fact"


async def test_a_stalled_embeddings_endpoint_costs_the_context_not_the_answer(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    async with grounded_server(
        settings, fake_llm, deadlines={"kb.answer_context": 0.3}, embed_model="fake-embed"
    ) as client:
        await add_facts(client, FACTS)
        await fake_llm.set_scenario(Scenario(tokens=["on ", "time"], embed_stall=True))
        chat_id = await new_chat(client)
        with trio.fail_after(10):
            response = await client.post(
                f"/api/chats/{chat_id}/messages",
                json={"content": QUESTION, "knowledge": True, "stream": True},
            )
        events = parse_sse(response.text)
        name, done = events[-1]
        assert name == "done"
        message = done["message"]
        assert (message["content"], message["status"]) == ("on time", "complete")
        assert message["sources"] == []
        assert message["knowledge_error"]["code"] == "deadline_exceeded"
        assert message["knowledge_error"]["scope"] == "kb.answer_context"
        assert any(r.path == "/api/embed" for r in fake_llm.requests)  # the query was sent
        assert fact_messages(fake_llm) == []
