"""``AUTOBOT_LLM_FALLBACK`` parsing, the fallback chain, and ``open_llm``."""

from __future__ import annotations

import pytest
import trio

from autobot.llm import (
    FallbackChain,
    FallbackSpec,
    LLMError,
    LLMStreamError,
    LLMUnavailable,
    OllamaProvider,
    OpenAIProvider,
    make_provider,
    open_llm,
    parse_fallback,
)
from tests.support.fake_llm import FakeLLM, Scenario, serve_fake_llm

MESSAGES = [{"role": "user", "content": "Hi"}]

# -- the setting -----------------------------------------------------------------------


def test_parse_the_documented_example() -> None:
    specs = parse_fallback(
        "openai:http://10.0.0.5:8080/v1:qwen2,ollama:http://127.0.0.1:11434:llama3.2"
    )
    assert specs == (
        FallbackSpec("openai", "http://10.0.0.5:8080/v1", "qwen2"),
        FallbackSpec("ollama", "http://127.0.0.1:11434", "llama3.2"),
    )
    assert str(specs[0]) == "openai:http://10.0.0.5:8080/v1:qwen2"


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("ollama:http://h:11434:llama3.2:latest", ("ollama", "http://h:11434", "llama3.2:latest")),
        ("ollama:http://h:qwen2:7b", ("ollama", "http://h", "qwen2:7b")),
        (
            " OpenAI:https://api.example.com/v1/:gpt-4o ",
            ("openai", "https://api.example.com/v1", "gpt-4o"),
        ),
        ("ollama:http://[::1]:11434:m", ("ollama", "http://[::1]:11434", "m")),
        ("openai:http://h:8080/v1:8b", ("openai", "http://h:8080/v1", "8b")),
    ],
)
def test_parse_entries(value: str, spec: tuple[str, str, str]) -> None:
    assert parse_fallback(value) == (FallbackSpec(*spec),)


def test_blank_is_no_fallback() -> None:
    assert parse_fallback("") == parse_fallback("  ") == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ollama", "is not provider:url:model"),
        ("claude:http://h:1:m", "names provider 'claude'; expected one of ollama, openai"),
        ("ollama:127.0.0.1:11434:llama3.2", "no http:// or https:// URL"),
        ("ollama:http://h:11434", "no model after"),
        ("ollama:http://h:11434:", "no model after"),
        ("ollama:http://h:99999:m", "invalid URL"),
        ("ollama:http://h:1:m,,openai:http://h:2:m", "an entry is empty"),
        ("ollama:http://h:1:m,", "an entry is empty"),
    ],
)
def test_bad_entries_raise_one_line_value_errors(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_fallback(value)
    assert "\n" not in str(caught.value)


# -- the chain -------------------------------------------------------------------------


@pytest.fixture
async def backup(nursery: trio.Nursery) -> FakeLLM:
    """A second fake LLM, answering differently from the first."""
    return await nursery.start(serve_fake_llm, Scenario(tokens=["from ", "backup"]))


def chain(primary: FakeLLM, backup: FakeLLM, **options: object) -> FallbackChain:
    return FallbackChain(
        [
            make_provider("ollama", primary.ollama_url, "big-model", **options),  # type: ignore[arg-type]
            make_provider("openai", backup.openai_url, "small-model", **options),  # type: ignore[arg-type]
        ]
    )


async def streamed(llm, **options: object) -> str:
    async with llm.stream(MESSAGES, **options) as answer:
        return "".join([delta async for delta in answer])


async def test_primary_answers_when_up(fake_llm: FakeLLM, backup: FakeLLM) -> None:
    async with chain(fake_llm, backup) as llm:
        assert await streamed(llm) == Scenario().text
        assert await llm.complete(MESSAGES) == Scenario().text
    assert backup.requests == []
    assert (llm.kind, llm.url, llm.model) == ("ollama", fake_llm.ollama_url, "big-model")


async def test_fallback_when_the_primary_is_down(fake_llm: FakeLLM, backup: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with chain(fake_llm, backup) as llm:
        assert await streamed(llm, model="huge-model") == "from backup"
        assert await llm.complete(MESSAGES, model="huge-model") == "from backup"
        assert await llm.list_models() == ["llama3.2", "qwen2"]
        health = await llm.health()
    # The backup gets its own model: a model named for the primary means nothing to it.
    assert [r.json()["model"] for r in backup.requests if r.method == "POST"] == ["small-model"] * 2
    assert (health["provider"], health["fallback"], health["url"]) == (
        "openai",
        True,
        backup.openai_url,
    )


async def test_fallback_when_the_primary_gives_no_first_token(
    fake_llm: FakeLLM, backup: FakeLLM, set_deadlines
) -> None:
    set_deadlines({"llm.first_token": 0.2})
    await fake_llm.set_scenario(Scenario(first_token_delay=30))
    async with chain(fake_llm, backup) as llm:
        assert await streamed(llm) == "from backup"
    with trio.fail_after(1):
        await fake_llm.streams[0].client_closed.wait()


async def test_no_fallback_once_a_token_was_streamed(fake_llm: FakeLLM, backup: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=5, disconnect_after=2))
    async with chain(fake_llm, backup) as llm:
        with pytest.raises(LLMStreamError) as caught:
            await streamed(llm)
    assert caught.value.partial == "t0 t1 "
    assert backup.requests == []


async def test_no_fallback_when_the_primary_answers_with_an_error(
    fake_llm: FakeLLM, backup: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(status=400, error_message="prompt too long"))
    async with chain(fake_llm, backup) as llm:
        with pytest.raises(LLMError, match="prompt too long"):
            await streamed(llm)
        with pytest.raises(LLMError, match="prompt too long"):
            await llm.complete(MESSAGES)
    assert backup.requests == []


async def test_all_providers_down(fake_llm: FakeLLM, backup: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    await backup.set_scenario(Scenario(refuse_connections=True))
    async with chain(fake_llm, backup) as llm:
        with pytest.raises(LLMUnavailable) as caught:
            await streamed(llm)
        with pytest.raises(LLMUnavailable):
            await llm.health()
    message = caught.value.message
    assert message.startswith("no LLM provider is available")
    assert fake_llm.ollama_url in message and backup.openai_url in message


async def test_an_open_primary_circuit_goes_straight_to_the_fallback(
    fake_llm: FakeLLM, backup: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    async with chain(fake_llm, backup, failure_threshold=1) as llm:
        assert await streamed(llm) == "from backup"
        assert await streamed(llm) == "from backup"
        primary, secondary = llm.breaker_snapshots()
    assert (primary["state"], primary["rejected"], primary["total_failures"]) == ("open", 1, 1)
    assert (secondary["state"], secondary["provider"]) == ("closed", "openai")


async def test_a_chain_needs_a_provider() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FallbackChain([])


# -- open_llm ------------------------------------------------------------------------


async def test_open_llm_without_fallback_is_the_provider(fake_llm: FakeLLM) -> None:
    async with open_llm("openai", fake_llm.openai_url, "qwen2", api_key="k") as llm:
        assert isinstance(llm, OpenAIProvider)
        assert await streamed(llm) == Scenario().text
    assert fake_llm.requests[0].headers["authorization"] == "Bearer k"


async def test_open_llm_with_fallback_is_a_chain(fake_llm: FakeLLM, backup: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    fallback = parse_fallback(f"openai:{backup.openai_url}:qwen2")
    async with open_llm(
        "ollama", fake_llm.ollama_url, "llama3.2", api_key="k", fallback=fallback
    ) as llm:
        assert isinstance(llm, FallbackChain)
        assert isinstance(llm.providers[0], OllamaProvider)
        assert await streamed(llm) == "from backup"
    # The key is for the primary; a fallback may be someone else's server.
    assert "authorization" not in backup.requests[0].headers


async def test_open_llm_rejects_an_unknown_provider() -> None:
    with pytest.raises(ValueError, match="unknown LLM provider 'gpt'"):
        async with open_llm("gpt", "http://127.0.0.1:1", "m"):
            pass  # pragma: no cover
