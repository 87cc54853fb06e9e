"""Every scripted behaviour of the kit's fake LLM, observed through a real httpx client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from autobot.testing import FakeLLM, Scenario, fake_embedding

CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=["ollama", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def body(kind: str, *, stream: bool = True, model: str = "llama3.2") -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": stream}


def pieces(kind: str, text: str) -> tuple[list[str], list[Any]]:
    """The content pieces of a streamed body, and its other parsed items (ends, errors)."""
    contents: list[str] = []
    others: list[Any] = []
    if kind == "ollama":
        items = [json.loads(line) for line in text.splitlines() if line]
        for item in items:
            if "message" in item and item["message"]["content"]:
                contents.append(item["message"]["content"])
            else:
                others.append(item)
        return contents, others
    for block in text.split("\n\n"):
        if not block.startswith("data: "):
            continue
        data = block.removeprefix("data: ").strip()
        if data == "[DONE]":
            others.append("[DONE]")
            continue
        item = json.loads(data)
        delta = item.get("choices", [{}])[0].get("delta", {})
        if delta.get("content"):
            contents.append(delta["content"])
        else:
            others.append(item)
    return contents, others


async def chat(fake: FakeLLM, kind: str, **options: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fake.ollama_url, timeout=5) as client:
        return await client.post(CHAT[kind], json=body(kind, **options))


async def test_streams_the_tokens_and_the_end(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Hel", "lo"]))
    response = await chat(fake_llm, kind)
    assert response.status_code == 200
    content_type = {"ollama": "application/x-ndjson", "openai": "text/event-stream"}[kind]
    assert response.headers["content-type"] == content_type
    contents, others = pieces(kind, response.text)
    assert contents == ["Hel", "lo"]
    if kind == "ollama":
        assert others[-1]["done"] is True and others[-1]["eval_count"] == 2
    else:
        assert others[-2]["choices"][0]["finish_reason"] == "stop"
        assert others[-1] == "[DONE]"
    assert fake_llm.streams[-1].finished and fake_llm.streams[-1].tokens_sent == 2


async def test_counted_tokens_and_the_whole_text(fake_llm: FakeLLM, kind: str) -> None:
    scenario = Scenario(tokens=3)
    await fake_llm.set_scenario(scenario)
    contents, _ = pieces(kind, (await chat(fake_llm, kind)).text)
    assert contents == ["t0 ", "t1 ", "t2 "]
    assert scenario.text == "t0 t1 t2 " and scenario.text_after(2) == "t0 t1 "


async def test_answers_whole_when_not_streamed(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["a", "b"]))
    answer = (await chat(fake_llm, kind, stream=False)).json()
    if kind == "ollama":
        assert answer["message"]["content"] == "ab" and answer["done"] is True
    else:
        assert answer["choices"][0]["message"]["content"] == "ab"
    assert fake_llm.streams == []


async def test_first_token_delay_and_token_delay(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=3, first_token_delay=0.2, token_delay=0.1))
    arrivals = []
    async with httpx.AsyncClient(base_url=fake_llm.ollama_url, timeout=5) as client:
        start = trio.current_time()
        async with client.stream("POST", CHAT[kind], json=body(kind)) as response:
            async for line in response.aiter_lines():
                if pieces(kind, line + "\n")[0]:
                    arrivals.append(trio.current_time() - start)
    assert len(arrivals) == 3
    assert 0.2 <= arrivals[0] < 1.0
    assert arrivals[1] - arrivals[0] >= 0.09 and arrivals[2] - arrivals[1] >= 0.09


async def test_stalls_after_n_tokens_until_the_client_leaves(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, stall_after=2))
    got: list[str] = []
    async with httpx.AsyncClient(base_url=fake_llm.ollama_url, timeout=5) as client:
        async with client.stream("POST", CHAT[kind], json=body(kind)) as response:
            with trio.move_on_after(0.3) as waited:
                async for line in response.aiter_lines():
                    got += pieces(kind, line + "\n")[0]
    assert waited.cancelled_caught, "the stream ended instead of stalling"
    assert got == ["t0 ", "t1 "]
    record = fake_llm.streams[-1]
    with trio.fail_after(2):
        await record.client_closed.wait()
    assert record.tokens_sent == 2 and not record.finished
    assert record.client_closed_at is not None and record.client_closed_at >= record.started_at


async def test_an_error_object_mid_stream(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, error_after=1, error_message="boom"))
    contents, others = pieces(kind, (await chat(fake_llm, kind)).text)
    assert contents == ["t0 "]
    error = others[-1]["error"]
    assert (error if kind == "ollama" else error["message"]) == "boom"


async def test_a_malformed_line(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, malformed_after=1))
    text = (await chat(fake_llm, kind)).text
    lines = [line for line in text.splitlines() if line]
    with pytest.raises(ValueError):
        json.loads(lines[-1].removeprefix("data: "))


async def test_a_malformed_whole_answer(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(malformed_after=0))
    with pytest.raises(ValueError):
        (await chat(fake_llm, kind, stream=False)).json()


async def test_a_truncated_stream_ends_without_its_terminator(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, truncate_after=2))
    response = await chat(fake_llm, kind)
    assert response.status_code == 200  # the body ended properly, just early
    contents, others = pieces(kind, response.text)
    assert contents == ["t0 ", "t1 "]
    assert "[DONE]" not in others and not any(
        isinstance(item, dict) and item.get("done") for item in others
    )


async def test_an_http_error_status(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(status=503, error_message="overloaded"))
    for stream in (True, False):
        response = await chat(fake_llm, kind, stream=stream)
        assert response.status_code == 503
        error = response.json()["error"]
        assert (error if kind == "ollama" else error["message"]) == "overloaded"


async def test_disconnects_mid_stream(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, disconnect_after=2))
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(fake_llm, kind)


async def test_refuses_connections_and_listens_again(fake_llm: FakeLLM, kind: str) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    with pytest.raises(httpx.ConnectError):
        await chat(fake_llm, kind)
    await fake_llm.set_scenario(Scenario(tokens=["back"]))
    assert pieces(kind, (await chat(fake_llm, kind)).text)[0] == ["back"]


async def test_scripts_answers_per_request(fake_llm: FakeLLM, kind: str) -> None:
    fake_llm.script(Scenario(status=500), Scenario(tokens=["second"]))
    assert (await chat(fake_llm, kind)).status_code == 500
    assert pieces(kind, (await chat(fake_llm, kind)).text)[0] == ["second"]
    # Used up: the standing scenario answers again.
    assert pieces(kind, (await chat(fake_llm, kind)).text)[0] == Scenario().token_list()


async def test_records_messages_model_and_connections(fake_llm: FakeLLM, kind: str) -> None:
    await chat(fake_llm, kind, model="qwen2")
    await chat(fake_llm, kind, stream=False, model="llama3.2")
    first, second = fake_llm.chat_requests
    assert first.messages == MESSAGES and first.model == "qwen2"
    assert second.model == "llama3.2" and second.json()["stream"] is False
    assert first.method == "POST" and first.path == CHAT[kind]
    assert first.headers["content-type"] == "application/json"
    assert len(fake_llm.streams) == 1 and fake_llm.streams[0].request is first
    assert fake_llm.connections == 2


async def test_lists_models(fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(models=("m1", "m2")))
    async with httpx.AsyncClient(base_url=fake_llm.ollama_url, timeout=5) as client:
        tags = (await client.get("/api/tags")).json()
        models = (await client.get("/v1/models")).json()
    assert [m["name"] for m in tags["models"]] == ["m1", "m2"]
    assert [m["id"] for m in models["data"]] == ["m1", "m2"]


async def test_deterministic_embeddings(fake_llm: FakeLLM) -> None:
    texts = ["cats purr", "a cat purrs", "tax law"]
    async with httpx.AsyncClient(base_url=fake_llm.ollama_url, timeout=5) as client:
        ollama = (await client.post("/api/embed", json={"model": "e", "input": texts})).json()
        openai = (await client.post("/v1/embeddings", json={"model": "e", "input": texts})).json()
    by_index = {item["index"]: item["embedding"] for item in openai["data"]}
    assert ollama["embeddings"] == [by_index[i] for i in range(3)]
    assert ollama["embeddings"][0] == fake_embedding("cats purr")
    assert len(ollama["embeddings"][0]) == 256

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    cat, cats, tax = ollama["embeddings"]
    assert cosine(cat, cats) > 0.7 > 0.3 > abs(cosine(cat, tax))


async def test_embeddings_fail_stall_and_break(fake_llm: FakeLLM) -> None:
    request = {"model": "e", "input": ["one", "two"]}
    async with httpx.AsyncClient(base_url=fake_llm.ollama_url, timeout=5) as client:
        await fake_llm.set_scenario(Scenario(embed_status=429))
        assert (await client.post("/api/embed", json=request)).status_code == 429
        await fake_llm.set_scenario(Scenario(embed_missing=True, embed_dimension=8))
        assert len((await client.post("/api/embed", json=request)).json()["embeddings"]) == 1
        await fake_llm.set_scenario(Scenario(embed_ragged=True, embed_dimension=8))
        vectors = (await client.post("/api/embed", json=request)).json()["embeddings"]
        assert [len(v) for v in vectors] == [8, 7]
        await fake_llm.set_scenario(Scenario(embed_stall=True))
        with trio.move_on_after(0.2) as waited:
            await client.post("/api/embed", json=request)
        assert waited.cancelled_caught
