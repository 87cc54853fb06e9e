"""Both providers against the fake LLM over real loopback HTTP: answers, phases, failures."""

from __future__ import annotations

import pytest
import trio

from autobot import current_deadlines
from autobot.llm import (
    HTTPProvider,
    LLMError,
    LLMStreamError,
    LLMStreamTimeout,
    LLMTimeout,
    LLMUnavailable,
    make_provider,
)
from tests.support.fake_llm import FakeLLM, Scenario

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
CHAT_PATH = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}


def provider(kind: str, fake: FakeLLM, **options: object) -> HTTPProvider:
    return make_provider(kind, fake.url(kind), "llama3.2", **options)  # type: ignore[arg-type]


async def collect(llm: HTTPProvider, **options: object) -> list[str]:
    async with llm.stream(MESSAGES, **options) as answer:  # type: ignore[arg-type]
        return [delta async for delta in answer]


# -- answers ---------------------------------------------------------------------------


async def test_stream_an_answer(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Hel", "lo, ", "wörld"]))
    async with provider(kind, fake_llm) as llm, llm.stream(MESSAGES) as answer:
        assert "".join([delta async for delta in answer]) == "Hello, wörld"
        assert answer.finished and answer.text == "Hello, wörld"
        stats = dict(answer.stats)
    assert stats.get("eval_count") == 3 or stats.get("finish_reason") == "stop"
    [request] = fake_llm.requests
    assert (request.method, request.path) == ("POST", CHAT_PATH[kind])
    assert request.json() == {"model": "llama3.2", "messages": MESSAGES, "stream": True}
    assert "authorization" not in request.headers
    assert fake_llm.streams[0].finished and not fake_llm.streams[0].client_closed.is_set()


async def test_complete_an_answer(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["Whole ", "answer"]))
    async with provider(kind, fake_llm) as llm:
        assert await llm.complete(MESSAGES, model="qwen2") == "Whole answer"
    assert fake_llm.requests[0].json() == {"model": "qwen2", "messages": MESSAGES, "stream": False}
    assert fake_llm.streams == []


async def test_list_models(kind: str, fake_llm: FakeLLM) -> None:
    async with provider(kind, fake_llm) as llm:
        assert await llm.list_models() == ["llama3.2", "qwen2"]
        health = await llm.health()
    assert health == {
        "provider": kind,
        "url": fake_llm.url(kind),
        "model": "llama3.2",
        "breaker": "closed",
        "models": 2,
    }
    assert current_deadlines()["llm.models"].histogram.count == 2  # list_models, health


async def test_api_key_is_sent_as_a_bearer_token(kind: str, fake_llm: FakeLLM) -> None:
    async with provider(kind, fake_llm, api_key="s3cret") as llm:
        await collect(llm, model="qwen2")
        await llm.list_models()
    assert [r.headers["authorization"] for r in fake_llm.requests] == ["Bearer s3cret"] * 2
    assert fake_llm.requests[0].json()["model"] == "qwen2"


async def test_connections_are_reused_after_complete_answers(kind: str, fake_llm: FakeLLM) -> None:
    async with provider(kind, fake_llm) as llm:
        for _ in range(3):
            assert "".join(await collect(llm)) == Scenario().text
        await llm.complete(MESSAGES)
    assert [r.connection for r in fake_llm.requests] == [1, 1, 1, 1]


async def test_messages_are_checked_before_sending(fake_llm: FakeLLM) -> None:
    async with provider("ollama", fake_llm) as llm:
        with pytest.raises(ValueError, match="role"):
            await llm.complete([{"role": "wizard", "content": "x"}])
        with pytest.raises(ValueError, match="at least one"):
            await collect_messages(llm, [])
    assert fake_llm.requests == []


async def collect_messages(llm: HTTPProvider, messages: list[dict[str, str]]) -> None:
    async with llm.stream(messages) as answer:  # pragma: no cover - raises on entry
        async for _ in answer:
            pass


# -- phases ----------------------------------------------------------------------------


async def test_each_phase_is_recorded_once(kind: str, fake_llm: FakeLLM) -> None:
    async with provider(kind, fake_llm) as llm:
        await collect(llm)
    table = current_deadlines()
    assert table["llm.connect"].histogram.count == 1
    assert table["llm.first_token"].histogram.count == 1
    assert table["llm.total"].histogram.count == 1
    assert table["llm.idle"].histogram.count >= 4  # one per wait after the first token


@pytest.mark.parametrize("delay_headers", [False, True])
async def test_connect_budget_stops_once_the_request_is_sent(
    kind: str, fake_llm: FakeLLM, set_deadlines, delay_headers: bool
) -> None:
    # The model takes 0.3 s to start; llm.connect (0.1 s) must not cover that wait.
    set_deadlines({"llm.connect": 0.1, "llm.first_token": 5})
    await fake_llm.set_scenario(Scenario(first_token_delay=0.3, delay_headers=delay_headers))
    async with provider(kind, fake_llm) as llm:
        assert "".join(await collect(llm)) == Scenario().text


@pytest.mark.parametrize("delay_headers", [False, True])
async def test_slow_first_token(
    kind: str, fake_llm: FakeLLM, set_deadlines, delay_headers: bool
) -> None:
    set_deadlines({"llm.first_token": 0.2})
    await fake_llm.set_scenario(Scenario(first_token_delay=30, delay_headers=delay_headers))
    async with provider(kind, fake_llm) as llm:
        start = trio.current_time()
        with pytest.raises(LLMTimeout) as caught:
            await collect(llm)
    assert not isinstance(caught.value, LLMStreamTimeout)  # nothing had been streamed
    assert (caught.value.scope, caught.value.deadline_s) == ("llm.first_token", 0.2)
    assert caught.value.to_body()["error"]["code"] == "llm_timeout"
    assert 0.2 <= trio.current_time() - start < 1.0
    with trio.fail_after(1):
        await fake_llm.streams[0].client_closed.wait()


async def test_stalled_stream_is_cut_by_llm_idle(
    kind: str, fake_llm: FakeLLM, set_deadlines
) -> None:
    set_deadlines({"llm.idle": 0.2})
    scenario = Scenario(tokens=10, stall_after=3)
    await fake_llm.set_scenario(scenario)
    received: list[str] = []
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMStreamTimeout) as caught:
            async with llm.stream(MESSAGES) as answer:
                async for delta in answer:
                    received.append(delta)
                    last_token_at = trio.current_time()
        assert llm.breaker.snapshot()["consecutive_failures"] == 1  # a stall is an outage
    assert caught.value.scope == "llm.idle"
    assert caught.value.partial == "".join(received) == scenario.text_after(3)
    assert 0.2 <= trio.current_time() - last_token_at < 1.0
    record = fake_llm.streams[0]
    with trio.fail_after(1):
        await record.client_closed.wait()
    assert record.tokens_sent == 3 and not record.finished


async def test_llm_total_bounds_the_whole_answer(
    kind: str, fake_llm: FakeLLM, set_deadlines
) -> None:
    set_deadlines({"llm.total": 0.3})
    await fake_llm.set_scenario(Scenario(tokens=1000, token_delay=0.01))
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMStreamTimeout) as caught:
            await collect(llm)
        # A long answer is not an outage: the breaker does not count it.
        assert llm.breaker.snapshot()["consecutive_failures"] == 0
    assert caught.value.scope == "llm.total"
    assert caught.value.partial.startswith("t0 t1 ")


# -- failures --------------------------------------------------------------------------


async def test_refused_connection_is_unavailable_at_once(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with provider(kind, fake_llm) as llm:
        start = trio.current_time()
        with pytest.raises(LLMUnavailable, match="cannot reach") as caught:
            await collect(llm)
        with pytest.raises(LLMUnavailable):
            await llm.complete(MESSAGES)
        with pytest.raises(LLMUnavailable):
            await llm.list_models()
        assert trio.current_time() - start < 0.5
    assert caught.value.status == 503 and caught.value.code == "llm_unavailable"


async def test_connection_dropped_before_the_answer_is_unavailable(
    kind: str, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(disconnect_after=0))
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMUnavailable):
            await collect(llm)
        with pytest.raises(LLMUnavailable):
            await llm.complete(MESSAGES)


async def test_http_error_status_carries_the_providers_message(
    kind: str, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(status=500, error_message="model 'x' exploded"))
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMError, match="HTTP 500: model 'x' exploded") as caught:
            await collect(llm)
        with pytest.raises(LLMError, match="model 'x' exploded"):
            await llm.complete(MESSAGES)
        # The provider answered: not an outage, the circuit stays closed.
        assert llm.breaker.snapshot()["consecutive_failures"] == 0
    assert caught.value.status == 502
    assert caught.value.to_body()["error"]["upstream_status"] == 500


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ({"error_after": 3}, "reported an error: the fake model failed"),
        ({"malformed_after": 3}, "malformed stream"),
        ({"truncate_after": 3}, "ended without"),
        ({"disconnect_after": 3}, "dropped the connection mid-answer"),
    ],
)
async def test_broken_stream_raises_llm_error_with_the_partial_text(
    kind: str, fake_llm: FakeLLM, failure: dict[str, int], message: str
) -> None:
    scenario = Scenario(tokens=["Once ", "upon ", "a ", "time"], **failure)  # type: ignore[arg-type]
    await fake_llm.set_scenario(scenario)
    received: list[str] = []
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMStreamError, match=message) as caught:
            async with llm.stream(MESSAGES) as answer:
                async for delta in answer:
                    received.append(delta)
    assert caught.value.partial == "".join(received) == "Once upon a "
    assert caught.value.code == "llm_error"


async def test_error_before_any_text_is_raised_on_entry(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(error_after=0, error_message="no such model"))
    entered = False
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMError, match="no such model"):
            async with llm.stream(MESSAGES):
                entered = True  # pragma: no cover
    assert not entered


async def test_malformed_non_streaming_answer(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(malformed_after=0))
    async with provider(kind, fake_llm) as llm:
        with pytest.raises(LLMError, match="not JSON"):
            await llm.complete(MESSAGES)


# -- cancellation ----------------------------------------------------------------------


@pytest.mark.parametrize("cancelled_in", ["iteration", "consumer"])
async def test_cancelled_consumer_closes_the_providers_connection_at_once(
    kind: str, fake_llm: FakeLLM, cancelled_in: str
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=1000, token_delay=0.005))
    async with provider(kind, fake_llm) as llm:
        received: list[str] = []
        with trio.CancelScope() as client:
            async with llm.stream(MESSAGES) as answer:
                async for delta in answer:
                    received.append(delta)
                    if len(received) == 3:
                        cancelled_at = trio.current_time()
                        client.cancel()  # the client went away...
                        if cancelled_in == "consumer":
                            # ... while the consumer was busy with its own await
                            # (say, sending to a websocket), not waiting on us.
                            await trio.sleep(1)
        assert answer.text == "".join(received) == "t0 t1 t2 "
        record = fake_llm.streams[0]
        with trio.fail_after(1):
            await record.client_closed.wait()
        assert record.client_closed_at is not None
        assert record.client_closed_at - cancelled_at < 0.1
        assert not record.finished and record.tokens_sent < 1000
        # The half-read connection was not put back in the pool.
        await fake_llm.set_scenario(Scenario())
        await collect(llm)
    assert [r.connection for r in fake_llm.requests] == [1, 2]


async def test_cancelled_while_waiting_for_the_first_token(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(first_token_delay=30))
    async with provider(kind, fake_llm) as llm:
        with trio.move_on_after(0.1):
            await collect(llm)
        cancelled_at = trio.current_time()
        record = fake_llm.streams[0]
        with trio.fail_after(1):
            await record.client_closed.wait()
        assert record.client_closed_at is not None
        assert record.client_closed_at - cancelled_at < 0.1
        # A cancelled call says nothing about the provider's health.
        assert llm.breaker.snapshot()["consecutive_failures"] == 0
