"""Pure pieces: blocking timeouts, endpoint health, backoff (on MockClock)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from autobot.redis import Backoff
from autobot.redis._blocking import derive_timeout, is_blocking, with_server_timeout
from autobot.redis._endpoints import EndpointHealth


def test_blocking_timeout_comes_from_the_deadline() -> None:
    args, timeout = with_server_timeout(("BLPOP", "q", 0), remaining_s=1.0, margin_s=0.1)
    assert args == ("BLPOP", "q", "0.9") and timeout == pytest.approx(0.9)


def test_shorter_explicit_timeout_is_kept_and_none_means_as_given() -> None:
    assert with_server_timeout(("BRPOP", "q", 0.25), 5.0, 0.1)[0][-1] == "0.25"
    assert with_server_timeout(("BLPOP", "q", 0), math.inf, 0.1) == (("BLPOP", "q", 0), 0.0)
    assert with_server_timeout(("BLPOP", "q", 3), math.inf, 0.1)[1] == 3.0


def test_short_deadlines_leave_the_server_half_and_never_zero() -> None:
    assert derive_timeout(0, 0.1, 0.1) == pytest.approx(0.05)
    assert derive_timeout(0, -1.0, 0.1) == 0.001


def test_millisecond_and_first_position_timeouts() -> None:
    args, _ = with_server_timeout(("XREAD", "COUNT", 1, "BLOCK", 0, "STREAMS", "s", "$"), 2.0, 0.1)
    assert args[4] == 1900
    assert with_server_timeout(("BZMPOP", 0, 1, "z", "MIN"), 1.0, 0.1)[0][1] == "0.9"
    assert with_server_timeout(("WAIT", 1, 0), 1.0, 0.5)[0][-1] == 500


def test_which_commands_block() -> None:
    assert is_blocking(("BLPOP", "q", 0))
    assert is_blocking((b"bzpopmin", "z", 0))
    assert is_blocking(("XREAD", "BLOCK", 10, "STREAMS", "s", "$"))
    assert not is_blocking(("XREAD", "STREAMS", "BLOCK", "$"))  # a stream named BLOCK
    assert not is_blocking(("GET", "k"))


def test_endpoint_health_needs_two_in_a_row_each_way() -> None:
    health = EndpointHealth()
    assert not health.record(False) and health.up
    assert health.record(False) and not health.up
    assert not health.record(True) and not health.up
    assert not health.record(False)
    assert not health.record(True)
    assert health.record(True) and health.up
    assert health.mark_down() and not health.up


async def test_backoff_doubles_with_jitter_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(0.1, 1.0, random_fraction=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    low = Backoff(0.1, 1.0, random_fraction=lambda: 0.0)
    assert low.next_delay() == 0.05
    backoff.reset()
    started = trio.current_time()
    for _ in range(3):
        await backoff.sleep()
    assert trio.current_time() - started == pytest.approx(0.7)


def test_backoff_validates() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
