"""Each provider's circuit breaker: outages open it, it fails fast, then it probes."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from autobot import BreakerState, run_health_checks
from autobot.llm import LLMHealthCheck, LLMTimeout, LLMUnavailable, make_provider
from tests.support.fake_llm import FakeLLM, Scenario

MESSAGES = [{"role": "user", "content": "Hi"}]


async def answer(llm) -> str:
    async with llm.stream(MESSAGES) as stream:
        return "".join([delta async for delta in stream])


async def test_refusals_open_the_circuit_then_a_probe_closes_it(
    kind: str, fake_llm: FakeLLM, mock_clock: trio.testing.MockClock
) -> None:
    # The mock clock stands still unless jumped: the sockets are real, the
    # cool-down is passed by hand.
    await fake_llm.set_scenario(Scenario(refuse_connections=True))
    llm = make_provider(kind, fake_llm.url(kind), "m", failure_threshold=2, cooldown_s=5)
    async with llm:
        for _ in range(2):
            with pytest.raises(LLMUnavailable, match="cannot reach"):
                await answer(llm)
        assert llm.breaker.state is BreakerState.OPEN

        await fake_llm.set_scenario(Scenario())  # back up, but the circuit is open
        with pytest.raises(LLMUnavailable, match=r"circuit open") as caught:
            await answer(llm)
        assert "5.0 s" in caught.value.message
        mock_clock.jump(4.9)
        with pytest.raises(LLMUnavailable, match="circuit open"):
            await llm.complete(MESSAGES)
        assert fake_llm.requests == []  # the open circuit never let a call through
        assert llm.breaker.snapshot()["rejected"] == 2

        # Half-open: one probe goes through; it fails, and the circuit re-opens.
        mock_clock.jump(0.1)
        assert llm.breaker.state is BreakerState.HALF_OPEN
        await fake_llm.set_scenario(Scenario(refuse_connections=True))
        with pytest.raises(LLMUnavailable, match="cannot reach"):
            await answer(llm)
        assert llm.breaker.state is BreakerState.OPEN

        # The next probe succeeds: closed again, calls flow.
        mock_clock.jump(5)
        await fake_llm.set_scenario(Scenario(tokens=2))
        assert await answer(llm) == "t0 t1 "
        assert llm.breaker.state is BreakerState.CLOSED
        assert await answer(llm) == "t0 t1 "
    snapshot = llm.breaker_snapshots()[0]
    assert snapshot["times_opened"] == 2 and snapshot["provider"] == kind


async def test_timeouts_open_the_circuit(kind: str, fake_llm: FakeLLM, set_deadlines) -> None:
    set_deadlines({"llm.first_token": 0.1})
    await fake_llm.set_scenario(Scenario(first_token_delay=30))
    llm = make_provider(kind, fake_llm.url(kind), "m", failure_threshold=2)
    async with llm:
        for _ in range(2):
            with pytest.raises(LLMTimeout):
                await answer(llm)
        assert llm.breaker.state is BreakerState.OPEN
        with pytest.raises(LLMUnavailable, match="circuit open"):
            await answer(llm)
    assert len(fake_llm.requests) == 2


async def test_health_check_reports_provider_and_breaker(kind: str, fake_llm: FakeLLM) -> None:
    llm = make_provider(kind, fake_llm.url(kind), "llama3.2", failure_threshold=1)
    async with llm:
        check = LLMHealthCheck(llm)
        assert (check.name, check.critical) == ("llm", False)
        report = await run_health_checks([check])
        assert report.status == "ok"
        result = report.checks["llm"]
        assert (result["ok"], result["provider"], result["breaker"]) == (True, kind, "closed")

        await fake_llm.set_scenario(Scenario(refuse_connections=True))
        report = await run_health_checks([check])
        assert report.status == "degraded" and report.http_status == 200
        assert "cannot reach" in report.checks["llm"]["error"]
        report = await run_health_checks([check])  # the circuit is open now
        assert "circuit open" in report.checks["llm"]["error"]


async def test_health_check_is_bounded_by_the_health_deadlines(
    nursery: trio.Nursery, set_deadlines
) -> None:
    # A server that accepts but never answers costs one failed check, on time.
    set_deadlines({"health": 0.5, "health.check": 0.2})
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, _never_answer, [listener])
    port = listener.socket.getsockname()[1]
    async with make_provider("ollama", f"http://127.0.0.1:{port}", "m") as silent:
        start = trio.current_time()
        report = await run_health_checks([LLMHealthCheck(silent)])
        assert trio.current_time() - start < 0.45
        # Cut by the health deadline, not by an LLM phase: no outage is counted.
        assert silent.breaker.snapshot()["consecutive_failures"] == 0
    assert report.status == "degraded"
    assert "health.check" in report.checks["llm"]["error"]


async def _never_answer(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()
