"""Embeddings from both provider formats, against the fake LLM over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest
import trio

from autobot import DeadlineTable
from autobot._breaker import BreakerState
from autobot.knowledge._embeddings import Embedder
from autobot.llm import (
    FallbackChain,
    HTTPProvider,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    make_provider,
)
from tests.support.fake_llm import FakeLLM, Scenario, fake_embedding

EMBED_PATH = {"ollama": "/api/embed", "openai": "/v1/embeddings"}
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(params=["ollama", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def provider(kind: str, fake: FakeLLM, **options: object) -> HTTPProvider:
    return make_provider(kind, fake.url(kind), "llama3.2", **options)  # type: ignore[arg-type]


async def test_one_vector_per_text_in_order(kind: str, fake_llm: FakeLLM) -> None:
    texts = ["the cat sat", "a dog barked", "cats sitting"]
    async with provider(kind, fake_llm, api_key="s3cret") as llm:
        vectors = await llm.embed(texts, "nomic-embed-text")
    assert vectors == [fake_embedding(text) for text in texts]
    [request] = fake_llm.requests
    assert (request.method, request.path) == ("POST", EMBED_PATH[kind])
    assert request.json() == {"model": "nomic-embed-text", "input": texts}
    assert request.headers["authorization"] == "Bearer s3cret"


async def test_no_texts_no_request(kind: str, fake_llm: FakeLLM) -> None:
    async with provider(kind, fake_llm) as llm:
        assert await llm.embed([], "m") == []
    assert fake_llm.requests == []


async def test_embedder_batches_and_returns_unit_rows(kind: str, fake_llm: FakeLLM) -> None:
    texts = [f"fact number {n} about topic{n % 7}" for n in range(150)]
    async with provider(kind, fake_llm) as llm:
        embedder = Embedder(llm, "m", batch_size=64)
        vectors = await embedder.embed(texts)
        query = await embedder.embed_one("facts about topic3")
    assert [len(r.json()["input"]) for r in fake_llm.requests] == [64, 64, 22, 1]
    assert vectors.shape == (150, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[100], fake_embedding(texts[100]), atol=1e-6)
    assert embedder.dimension == 256
    # Sharing words ("fact" ~ "facts", "topic3") makes texts close; the best are topic3's.
    best = np.argsort(-(vectors @ query))[:5]
    assert all(texts[i].endswith("topic3") for i in best)


async def test_empty_input_makes_no_request(fake_llm: FakeLLM) -> None:
    async with provider("ollama", fake_llm) as llm:
        assert (await Embedder(llm, "m").embed([])).shape == (0, 0)
    assert fake_llm.requests == []


async def test_an_error_status_is_an_llm_error(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(embed_status=404, error_message="model 'm' not found"))
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMError, match="model 'm' not found") as caught:
            await Embedder(llm, "m").embed(["x"])
        assert caught.value.details["upstream_status"] == 404
        assert llm.breaker.snapshot()["consecutive_failures"] == 0  # it answered: it is up


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (Scenario(embed_missing=True), "1 embeddings for 2 texts"),
        (Scenario(embed_ragged=True), "different lengths"),
    ],
)
async def test_a_malformed_answer_is_an_llm_error(
    kind: str, fake_llm: FakeLLM, scenario: Scenario, message: str
) -> None:
    await fake_llm.set_scenario(scenario)
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMError, match=message):
            await Embedder(llm, "m").embed(["one", "two"])


async def test_a_changed_dimension_is_an_llm_error(kind: str, fake_llm: FakeLLM) -> None:
    async with provider(kind, fake_llm) as llm:
        embedder = Embedder(llm, "m")
        await embedder.embed(["first"])
        await fake_llm.set_scenario(Scenario(embed_dimension=128))
        with pytest.raises(LLMError, match="128 dimensions, not 256"):
            await embedder.embed(["second"])
    assert embedder.dimension == 256


async def test_an_unreachable_provider_is_unavailable(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMUnavailable, match="cannot reach"):
            await Embedder(llm, "m").embed(["x"])


async def test_embeddings_and_chat_share_one_breaker(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with provider(kind, fake_llm, failure_threshold=2) as llm:
        for _ in range(2):
            with pytest.raises(LLMUnavailable):
                await llm.complete(MESSAGES)
        assert llm.breaker.state is BreakerState.OPEN
        await fake_llm.set_scenario(Scenario())
        with pytest.raises(LLMUnavailable, match="circuit open"):
            await llm.embed(["x"], "m")
    assert fake_llm.requests == []


async def test_embedding_outages_open_the_breaker_for_chat(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with provider(kind, fake_llm, failure_threshold=2) as llm:
        for _ in range(2):
            with pytest.raises(LLMUnavailable):
                await llm.embed(["x"], "m")
        await fake_llm.set_scenario(Scenario())
        with pytest.raises(LLMUnavailable, match="circuit open"):
            await llm.complete(MESSAGES)
    assert fake_llm.requests == []


async def test_a_stalled_endpoint_expires_kb_embed(
    kind: str,
    fake_llm: FakeLLM,
    set_deadlines: Callable[[Mapping[str, float]], DeadlineTable],
) -> None:
    table = set_deadlines({"kb.embed": 0.2})
    await fake_llm.set_scenario(Scenario(embed_stall=True))
    async with provider(kind, fake_llm, failure_threshold=1) as llm:
        start = trio.current_time()
        with pytest.raises(LLMTimeout) as caught:
            await Embedder(llm, "m").embed(["x"])
        assert 0.2 <= trio.current_time() - start < 2
        assert (caught.value.scope, caught.value.deadline_s) == ("kb.embed", 0.2)
        # A provider that does not answer is out: it counts against the breaker.
        assert llm.breaker.state is BreakerState.OPEN
    assert table["kb.embed"].histogram.summary().expired == 1
    assert table["llm.connect"].histogram.count == 1


async def test_a_cancelled_request_closes_its_connection(fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(embed_stall=True))
    async with provider("ollama", fake_llm) as llm:
        with trio.move_on_after(0.1):
            await llm.embed(["x"], "m")
        assert llm.breaker.snapshot()["consecutive_failures"] == 0
        await fake_llm.set_scenario(Scenario())
        assert len(await llm.embed(["x"], "m")) == 1
    assert fake_llm.connections == 2  # the stalled connection was not reused


async def test_a_chain_embeds_with_its_primary_only(fake_llm: FakeLLM) -> None:
    primary = make_provider("ollama", fake_llm.url("ollama"), "llama3.2")
    backup = make_provider("openai", fake_llm.url("openai"), "qwen2")
    async with FallbackChain([primary, backup]) as chain:
        assert len(await Embedder(chain, "m").embed(["x", "y"])) == 2
        await fake_llm.set_scenario(Scenario(refuse_connections=True))
        with pytest.raises(LLMUnavailable):
            await chain.embed(["x"], "m")
    assert [r.path for r in fake_llm.requests] == ["/api/embed"]
