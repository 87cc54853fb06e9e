"""``phased_deadline``: one block, several named budgets in turn."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from autobot import DeadlineExceeded, UnknownDeadlineScope, current_deadlines, deadline
from autobot._deadlines import phased_deadline


def counts(name: str) -> tuple[int, int]:
    summary = current_deadlines()[name].histogram.summary()
    return summary.count, summary.expired


async def test_each_phase_gets_its_own_budget_from_its_switch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    with phased_deadline("llm.connect") as phase:
        await trio.sleep(4.9)  # under llm.connect's 5 s
        phase.switch("llm.first_token")
        assert phase.cancel_scope.deadline == pytest.approx(start + 4.9 + 120)
        await trio.sleep(119)  # 123.9 s in all: more than either budget alone
    assert trio.current_time() - start == pytest.approx(123.9)
    assert counts("llm.connect") == (1, 0)
    assert counts("llm.first_token") == (1, 0)
    assert current_deadlines()["llm.connect"].histogram.max_s == pytest.approx(4.9)


async def test_expiry_names_the_phase_it_happened_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        with phased_deadline("llm.connect") as phase:
            await trio.sleep(1)
            phase.switch("llm.first_token")
            await trio.sleep_forever()
    assert (caught.value.scope, caught.value.deadline_s) == ("llm.first_token", 120.0)
    assert trio.current_time() - start == pytest.approx(121)
    assert counts("llm.connect") == (1, 0)
    assert counts("llm.first_token") == (1, 1)


async def test_expiry_in_the_first_phase(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(DeadlineExceeded) as caught:
        with phased_deadline("llm.connect"):
            await trio.sleep_forever()
    assert caught.value.scope == "llm.connect"
    assert counts("llm.connect") == (1, 1)


async def test_switching_to_the_same_phase_restarts_its_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with phased_deadline("llm.idle") as phase:
        for _ in range(5):
            await trio.sleep(20)  # 100 s in all, never 30 s without a switch
            phase.switch("llm.idle")
    assert counts("llm.idle") == (6, 0)


async def test_an_enclosing_deadline_still_wins(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        with deadline("llm.connect"):  # 5 s
            with phased_deadline("llm.idle") as phase:  # 30 s...
                await trio.sleep(1)
                phase.switch("llm.first_token")  # ... then 120 s: neither extends the 5 s
                await trio.sleep_forever()
    assert caught.value.scope == "llm.connect"
    assert trio.current_time() - start == pytest.approx(5)
    assert counts("llm.idle") == (1, 0)
    assert counts("llm.first_token") == (0, 0)  # cut from outside: says nothing of its budget


async def test_outside_cancellation_records_nothing(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(2):
        with phased_deadline("llm.connect"):
            await trio.sleep_forever()
    assert counts("llm.connect") == (0, 0)


async def test_early_cancel_through_the_scope_is_not_an_expiry() -> None:
    with phased_deadline("llm.connect") as phase:
        phase.cancel_scope.cancel()
        await trio.sleep_forever()
    assert counts("llm.connect") == (0, 0)


async def test_unknown_phase_leaves_the_current_one_running() -> None:
    with phased_deadline("llm.connect") as phase:
        with pytest.raises(UnknownDeadlineScope):
            phase.switch("llm.nonsense")
        assert phase.name == "llm.connect"
    with pytest.raises(UnknownDeadlineScope):
        with phased_deadline("llm.nonsense"):
            pass  # pragma: no cover
