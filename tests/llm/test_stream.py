"""``TextStream``'s deadlines and partial text, over an in-memory chunk source, in virtual time."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from autobot import DeadlineExceeded, current_deadlines
from autobot._deadlines import phased_deadline
from autobot.llm import LLMStreamError, LLMStreamTimeout, NDJSONChatParser, TextStream


def line(content: str, *, done: bool = False) -> bytes:
    item = {"message": {"role": "assistant", "content": content}, "done": done}
    return json.dumps(item).encode() + b"\n"


DONE = line("", done=True)


class Source:
    """A chunk source the test writes into, and what the stream did to it."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](100)
        self.closed = False
        self.outages = 0

    async def close(self) -> None:
        self.closed = True
        await self.receive.aclose()

    def stream(self) -> TextStream:
        def outage() -> None:
            self.outages += 1

        return TextStream(
            NDJSONChatParser(), self.receive, source="test", close=self.close, on_outage=outage
        )

    async def play(self, *steps: bytes | float | None) -> None:
        """Send chunks, sleep for numbers, end the source at ``None``."""
        for step in steps:
            if step is None:
                await self.send.aclose()
            elif isinstance(step, bytes):
                await self.send.send(step)
            else:
                await trio.sleep(step)


async def first_token(answer: TextStream) -> None:
    with phased_deadline("llm.first_token"):
        await answer.wait_first_token()


async def pieces(answer: TextStream) -> list[str]:
    """Iterate the rest of the stream with its reader running, as the providers do."""
    async with answer.reading():
        return [piece async for piece in answer]


async def test_a_slow_steady_stream_is_never_cut(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    # 25 s between chunks, under llm.idle's 30 s; 100 s in all, more than llm.idle.
    nursery.start_soon(
        source.play, line("a"), 25, line("b"), 25, line("c"), 25, line("d"), 25, DONE, None
    )
    answer = source.stream()
    start = trio.current_time()
    await first_token(answer)
    assert await pieces(answer) == ["a", "b", "c", "d"]
    assert trio.current_time() - start == pytest.approx(100)
    assert answer.finished and answer.text == "abcd"
    assert answer.stats == {"done": True}
    assert current_deadlines()["llm.idle"].histogram.count >= 4


async def test_a_stall_raises_llm_idle_with_the_partial_text(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("Hel"), 1, line("lo"), 3600, DONE)
    answer = source.stream()
    await first_token(answer)
    received = []
    with pytest.raises(LLMStreamTimeout) as caught:
        async with answer.reading():
            async for delta in answer:
                received.append(delta)
                stalled_from = trio.current_time()
    assert received == ["Hel", "lo"]
    assert (caught.value.scope, caught.value.deadline_s) == ("llm.idle", 30.0)
    assert caught.value.partial == answer.text == "Hello"
    assert caught.value.code == "llm_timeout"
    assert trio.current_time() - stalled_from == pytest.approx(30)
    assert source.outages == 1


async def test_the_idle_budget_comes_from_the_table(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, set_deadlines
) -> None:
    set_deadlines({"llm.idle": 2.5})
    source = Source()
    nursery.start_soon(source.play, line("x"), 3, line("y"))
    answer = source.stream()
    await first_token(answer)
    with pytest.raises(LLMStreamTimeout) as caught:
        await pieces(answer)
    assert caught.value.deadline_s == 2.5 and caught.value.partial == "x"


async def test_a_slow_first_token_expires_the_first_token_phase(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, 200, line("late"))
    start = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        await first_token(source.stream())
    assert caught.value.scope == "llm.first_token"
    assert trio.current_time() - start == pytest.approx(120)


async def test_empty_chunks_before_the_first_token_do_not_end_its_phase(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # An OpenAI role chunk or Ollama's empty first message is not a token.
    source = Source()
    nursery.start_soon(source.play, line(""), 100, line("go"), DONE, None)
    answer = source.stream()
    await first_token(answer)
    assert await pieces(answer) == ["go"]


async def test_error_object_mid_stream(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("par") + line("tial") + b'{"error": "GPU on fire"}\n')
    answer = source.stream()
    await first_token(answer)
    with pytest.raises(LLMStreamError, match="GPU on fire") as caught:
        await pieces(answer)
    assert caught.value.partial == "partial"
    assert caught.value.code == "llm_error" and caught.value.status == 502
    assert source.outages == 0  # the provider answered: not an outage


async def test_stream_ending_without_its_terminator(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("cut "), line("short"), None)
    answer = source.stream()
    await first_token(answer)
    with pytest.raises(LLMStreamError, match="without its final 'done'") as caught:
        await pieces(answer)
    assert caught.value.partial == "cut short"
    assert not answer.finished


async def test_an_empty_answer(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, DONE, None)
    answer = source.stream()
    await first_token(answer)
    assert answer.finished
    assert await pieces(answer) == []


async def test_the_end_is_the_terminator_not_the_end_of_the_body(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # The body stays open after the terminator: iteration ends anyway, at once.
    source = Source()
    nursery.start_soon(source.play, line("a") + DONE + b"trailing bytes are ignored\n")
    answer = source.stream()
    start = trio.current_time()
    await first_token(answer)
    assert await pieces(answer) == ["a"]
    assert trio.current_time() == start
    assert answer.finished and answer.text == "a"
    # Closing reads the rest of the body so the connection could be reused; a
    # body held open is given up after llm.idle, without an error.
    await answer.aclose()
    assert trio.current_time() - start == pytest.approx(30)
    assert source.closed


async def test_closing_a_finished_stream_drains_what_is_left(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("a") + DONE, 1, b"rest of the body", None)
    answer = source.stream()
    start = trio.current_time()
    await first_token(answer)
    assert await pieces(answer) == ["a"]
    await answer.aclose()
    assert trio.current_time() - start == pytest.approx(1)
    assert source.closed


async def test_closing_an_unfinished_stream_does_not_wait(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("a"), 100, DONE)
    answer = source.stream()
    start = trio.current_time()
    await first_token(answer)
    await answer.aclose()
    assert trio.current_time() == start and source.closed


async def test_cancelled_consumer_keeps_the_text_so_far_and_close_is_called(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("one "), 1, line("two "), 1, line("three "), 3600, DONE)
    answer = source.stream()
    await first_token(answer)
    with trio.move_on_after(1.5):
        try:
            await pieces(answer)
        finally:
            await answer.aclose()
    assert answer.text == "one two "
    assert source.closed
    with pytest.raises(trio.ClosedResourceError):
        await anext(answer)


async def test_text_that_arrived_together_comes_out_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = Source()
    answer = source.stream()
    await source.send.send(line("a"))
    await first_token(answer)
    async with answer.reading():
        # A consumer that keeps up gets each piece as it comes...
        assert await anext(answer) == "a"
        await source.send.send(line("b"))
        assert await anext(answer) == "b"
        # ...one that fell behind gets what piled up, in one step, not a backlog.
        for piece in "cde":
            await source.send.send(line(piece))
        await trio.sleep(1)
        assert await anext(answer) == "cde"
        await source.send.send(line("f") + DONE)
        assert [piece async for piece in answer] == ["f"]
    assert answer.text == "abcdef"
    assert answer.finished


async def test_a_failure_after_ready_text_comes_after_that_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = Source()
    answer = source.stream()
    await source.send.send(line("a"))
    await first_token(answer)
    async with answer.reading():
        await source.send.send(line("b") + b"{not json\n")
        await trio.sleep(1)
        assert await anext(answer) == "ab"
        with pytest.raises(LLMStreamError) as caught:
            await anext(answer)
    assert caught.value.partial == "ab"


async def test_a_slow_consumer_does_not_count_as_provider_silence(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("a"), 10, line("b"), 10, DONE, None)
    answer = source.stream()
    await first_token(answer)
    async with answer.reading():
        assert await anext(answer) == "a"
        await trio.sleep(100)  # the consumer is busy far longer than llm.idle's 30 s
        assert [piece async for piece in answer] == ["b"]
    assert answer.finished


async def test_iterating_without_the_reader_is_a_programming_error(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    source = Source()
    nursery.start_soon(source.play, line("a"), 1, line("b"))
    answer = source.stream()
    await first_token(answer)
    assert await anext(answer) == "a"  # what already arrived is handed over
    with pytest.raises(RuntimeError, match="reading"):
        await anext(answer)
