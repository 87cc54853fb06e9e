"""The providers' connection pool against the fake LLM: reuse, the idle limit, the slot limit."""

from __future__ import annotations

import trio
import trio.testing

from autobot.llm import HTTPProvider, OllamaProvider, OpenAIProvider
from autobot.testing import FakeLLM, Scenario

MESSAGES = [{"role": "user", "content": "Hi"}]


def provider(kind: str, fake: FakeLLM, **limits: int) -> HTTPProvider:
    cls = OllamaProvider if kind == "ollama" else OpenAIProvider
    return cls(fake.url(kind), "llama3.2", **limits)  # type: ignore[arg-type]


async def read_whole(llm: HTTPProvider) -> str:
    async with llm.stream(MESSAGES) as answer:  # type: ignore[arg-type]
        return "".join([delta async for delta in answer])


async def hold_open(llm: HTTPProvider, all_open: trio.Event, opened: list[int], count: int) -> None:
    """Stream an answer, keeping it open until ``count`` answers have their first token."""
    async with llm.stream(MESSAGES) as answer:  # type: ignore[arg-type]
        opened.append(1)
        if len(opened) == count:
            all_open.set()
        await all_open.wait()
        assert "".join([delta async for delta in answer]) == "abc"


async def test_answers_one_after_another_share_one_connection(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["a", "b", "c"]))
    async with provider(kind, fake_llm) as llm:
        for _ in range(5):
            assert await read_whole(llm) == "abc"
    assert fake_llm.connections == 1
    assert {request.connection for request in fake_llm.requests} == {1}


async def test_at_most_the_keepalive_limit_of_connections_stays_open(
    kind: str, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["a", "b", "c"]))
    async with provider(kind, fake_llm, max_keepalive_connections=3) as llm:
        for burst in range(2):
            all_open, opened = trio.Event(), []
            async with trio.open_nursery() as nursery:
                for _ in range(12):
                    nursery.start_soon(hold_open, llm, all_open, opened, 12)
            # The first burst opens 12; the second reuses the 3 kept and opens 9.
            assert fake_llm.connections == [12, 21][burst]
        assert await read_whole(llm) == "abc"
        assert fake_llm.connections == 21


async def test_an_answer_left_early_does_not_give_its_connection_back(
    kind: str, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=50, token_delay=0.01))
    async with provider(kind, fake_llm) as llm:
        async with llm.stream(MESSAGES) as answer:  # type: ignore[arg-type]
            await answer.__anext__()
        await fake_llm.streams[0].client_closed.wait()
        await fake_llm.set_scenario(Scenario(tokens=["a", "b", "c"]))
        assert await read_whole(llm) == "abc"
        assert await read_whole(llm) == "abc"
    assert [request.connection for request in fake_llm.requests] == [1, 2, 2]


async def test_max_connections_bounds_the_answers_in_flight(kind: str, fake_llm: FakeLLM) -> None:
    await fake_llm.set_scenario(Scenario(tokens=["a", "b", "c"]))
    async with provider(kind, fake_llm, max_connections=2) as llm:
        release, opened, third = trio.Event(), [], []

        async def ask_third() -> None:
            third.append(await read_whole(llm))

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(hold_open, llm, release, opened, 3)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask_third)
            await trio.testing.wait_all_tasks_blocked()
            assert len(opened) == 2 and len(fake_llm.requests) == 2 and third == []
            release.set()
        assert third == ["abc"] and len(fake_llm.requests) == 3
