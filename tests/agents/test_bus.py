"""The bus through its Python API, on both backends: order, broadcast, waits, expiry, hand back."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from autobot import DeadlineTable, PayloadTooLarge, ValidationFailed
from autobot.agents import (
    AgentBus,
    AgentMessage,
    HandoverState,
    MessageType,
    Priority,
)
from autobot.storage import Store, open_embedded_store
from tests.support.polling import eventually

PRESENCE_S = DeadlineTable().budget("agent.presence")
HANDOVER_S = DeadlineTable().budget("agent.handover")


class WallClock:
    """A wall clock the test moves by hand: message expiry on either backend."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def names(messages: list[AgentMessage]) -> list[str]:
    return [message.payload["name"] for message in messages]


async def test_highest_priority_first_then_oldest_first(store: Store) -> None:
    bus = AgentBus(store)
    for name, priority in [
        ("n1", "normal"),
        ("l1", "low"),
        ("c1", "critical"),
        ("n2", Priority.NORMAL),
        ("h1", "high"),
        ("c2", Priority.CRITICAL),
        ("n3", "normal"),
    ]:
        await bus.send(
            "planner", type="request", payload={"name": name}, sender="cli", priority=priority
        )
    first = await bus.receive_nowait("planner", 3)
    assert names(first) == ["c1", "c2", "h1"]
    assert [m.priority for m in first] == [Priority.CRITICAL, Priority.CRITICAL, Priority.HIGH]
    async with bus.inbox("planner") as inbox:
        rest = [await anext(inbox) for _ in range(4)]
    assert names(rest) == ["n1", "n2", "n3", "l1"]
    assert await bus.receive_nowait("planner", 10) == []
    assert bus.counts()["sent"] == 7 and bus.counts()["delivered"] == 7


async def test_a_message_says_what_was_sent(store: Store) -> None:
    bus = AgentBus(store)
    sent = await bus.send(
        "coder", type=MessageType.EVENT, payload=[1, "two", None], sender="planner", ttl_s=30
    )
    (got,) = await bus.receive_nowait("coder")
    assert got == sent
    assert got.to_json() == {
        "id": sent.id,
        "type": "event",
        "priority": "normal",
        "sender": "planner",
        "recipient": "coder",
        "payload": [1, "two", None],
        "created_at": sent.created_at,
        "ttl_s": 30.0,
    }


async def test_broadcast_reaches_every_registered_agent_exactly_once(store: Store) -> None:
    bus = AgentBus(store)
    await bus.heartbeat("alpha")
    assert await bus.receive_nowait("beta") == []  # a receive registers
    await bus.send("gamma", type="heartbeat", payload=None, sender="gamma")  # and a heartbeat
    await bus.send("delta", type="request", payload={}, sender="cli")  # a send does not
    assert await bus.agents() == ["alpha", "beta", "gamma"]

    sent = await bus.broadcast(type="event", payload={"name": "hello"}, sender="cli")
    assert sent.recipients == ("alpha", "beta", "gamma")
    for agent in ("alpha", "beta", "gamma"):
        (copy,) = await bus.receive_nowait(agent, 10)
        assert (copy.id, copy.recipient, copy.payload) == (sent.id, agent, {"name": "hello"})
        assert await bus.receive_nowait(agent, 10) == []
    assert [m.type for m in await bus.receive_nowait("delta", 10)] == [MessageType.REQUEST]
    assert bus.counts()["sent"] == 4


async def test_a_heartbeat_to_oneself_only_registers(store: Store) -> None:
    bus = AgentBus(store)
    await bus.send("watcher", type="heartbeat", payload=None, sender="worker")
    await bus.send("worker", type="heartbeat", payload=None, sender="worker")
    assert await bus.agents() == ["worker"]
    assert [m.sender for m in await bus.receive_nowait("watcher", 10)] == ["worker"]
    assert await bus.receive_nowait("worker", 10) == []


async def test_a_blocking_receive_wakes_when_a_message_arrives(store: Store) -> None:
    bus = AgentBus(store)

    async def send_when_waiting() -> None:
        await trio.testing.wait_all_tasks_blocked()
        assert bus.waiting("sleepy") == 1
        await bus.send("sleepy", type="event", payload={"name": "wake"}, sender="cli")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_when_waiting)
        with trio.fail_after(5):
            got = await bus.receive("sleepy", 10)
    assert names(got) == ["wake"]
    assert bus.waiting("sleepy") == 0


async def test_a_blocking_receive_that_gives_up_loses_nothing(store: Store) -> None:
    bus = AgentBus(store)
    with trio.move_on_after(0.1) as scope:
        await bus.receive("patient", 10)
    assert scope.cancelled_caught
    await bus.send("patient", type="event", payload={"name": "late"}, sender="cli")
    with trio.fail_after(5):
        assert names(await bus.receive("patient", 10)) == ["late"]


async def test_expired_messages_are_dropped_never_delivered_and_counted(store: Store) -> None:
    clock = WallClock()
    bus = AgentBus(store, clock=clock)
    await bus.send("a", type="event", payload={"name": "short"}, sender="cli", ttl_s=5)
    await bus.send("a", type="event", payload={"name": "long"}, sender="cli", ttl_s=60)
    await bus.send("a", type="event", payload={"name": "forever"}, sender="cli")
    clock.now += 5  # "short" expires at this very moment
    assert names(await bus.receive_nowait("a", 10)) == ["long", "forever"]
    assert bus.counts()["expired"] == 1

    await bus.send(
        "a", type="event", payload={"name": "stale"}, sender="cli", ttl_s=1, priority="critical"
    )
    clock.now += 2
    assert await bus.receive_nowait("a", 10) == []  # expired, and nothing else there
    assert bus.counts()["expired"] == 2
    await bus.send("a", type="event", payload={"name": "stale"}, sender="cli", ttl_s=1)
    await bus.send("a", type="event", payload={"name": "fresh"}, sender="cli", ttl_s=1)
    clock.now += 0.5
    await bus.send("a", type="event", payload={"name": "newest"}, sender="cli", ttl_s=1)
    clock.now += 0.6
    with trio.fail_after(5):  # a blocking receive skips the expired ones too
        assert names(await bus.receive("a", 10)) == ["newest"]
    assert bus.counts() == {
        "sent": 7,
        "delivered": 3,
        "expired": 4,
        "handed_back": 0,
        "malformed": 0,
    }


async def test_an_inbox_hands_back_what_it_prefetched_and_did_not_hand_out(store: Store) -> None:
    bus = AgentBus(store)
    for name in ("m1", "m2", "m3"):
        await bus.send("reader", type="event", payload={"name": name}, sender="cli")
    async with bus.inbox("reader", prefetch=10) as inbox:
        first = await anext(inbox)
        await bus.send("reader", type="event", payload={"name": "m4"}, sender="cli")
    assert names([first]) == ["m1"]
    assert names(await bus.receive_nowait("reader", 10)) == ["m2", "m3", "m4"]
    assert bus.counts()["handed_back"] == 2


async def test_an_inbox_cancelled_while_waiting_loses_nothing(store: Store) -> None:
    bus = AgentBus(store)
    with trio.move_on_after(0.1):
        async with bus.inbox("planner") as inbox:
            async for _ in inbox:
                raise AssertionError("nothing was sent")
    await bus.send("planner", type="event", payload={"name": "after"}, sender="cli")
    async with bus.inbox("planner") as inbox:
        with trio.fail_after(5):
            assert names(await inbox.receive(5)) == ["after"]


async def test_an_abandoned_handover_is_handed_back_at_the_head(store: Store) -> None:
    bus = AgentBus(store)
    for name, priority in [("n1", "normal"), ("h1", "high"), ("n2", "normal")]:
        await bus.send(
            "slow", type="event", payload={"name": name}, sender="cli", priority=priority
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        handover = await bus.take("slow", 2)
        assert names(handover.start()) == ["h1", "n1"]
        await bus.send("slow", type="event", payload={"name": "h2"}, sender="cli", priority="high")
        handover.abandon()  # the response could not be written: the sweeper hands back

        async def returned() -> bool:
            return handover.state is HandoverState.RETURNED

        with trio.fail_after(5):
            await eventually(returned, interval_s=0.01)
        again = await bus.receive_nowait("slow", 10)
        nursery.cancel_scope.cancel()
    assert names(again) == ["h1", "h2", "n1", "n2"]
    assert handover.state is HandoverState.RETURNED
    assert bus.counts()["handed_back"] == 2 and bus.handovers() == 0


async def test_a_delivered_handover_stays_delivered(store: Store) -> None:
    bus = AgentBus(store)
    await bus.send("fast", type="event", payload={"name": "m1"}, sender="cli")
    handover = await bus.take("fast", 5)
    assert names(handover.start()) == ["m1"]
    handover.delivered()
    handover.abandon()  # too late: nothing happens
    await handover.hand_back()
    assert handover.state is HandoverState.DELIVERED
    assert await bus.receive_nowait("fast", 5) == []
    assert bus.counts()["delivered"] == 1 and bus.handovers() == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "HIGH"}, "type"),
        ({"type": "MessageType.BROADCAST"}, "type"),
        ({"type": 3}, "type"),
        ({"priority": "HIGH"}, "priority"),
        ({"priority": 2}, "priority"),
        ({"priority": None}, "priority"),
        ({"sender": "no spaces"}, "sender"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": True}, "ttl_s"),
        ({"payload": {1, 2}}, "payload"),
    ],
)
async def test_the_python_api_checks_fields_as_strictly_as_http(
    store: Store, fields: dict, field: str
) -> None:
    bus = AgentBus(store)
    message = {"type": "event", "payload": None, "sender": "cli"} | fields
    with pytest.raises(ValidationFailed) as caught:
        await bus.send("planner", **message)
    assert [item["field"] for item in caught.value.details["fields"]] == [field]
    with pytest.raises(ValidationFailed):
        await bus.send("not/a/name", type="event", payload=None, sender="cli")
    with pytest.raises(PayloadTooLarge):
        await bus.send("planner", type="event", payload="x" * 70_000, sender="cli")
    assert await bus.receive_nowait("planner", 10) == []


# -- time-dependent, on the embedded store under a MockClock -------------------------------------
# The clock is moved by hand, and only while no journal write is under way
# (every write here has returned before it moves), so no file.io step sees
# virtual time pass.


@pytest.fixture
async def embedded_only(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    """The embedded store alone: Redis keeps presence on its own clock, not the Trio one."""
    async with open_embedded_store(tmp_path / "store") as store:
        yield store


async def advance(clock: trio.testing.MockClock, seconds: float, step_s: float = 1.0) -> None:
    """Move virtual time on by ``seconds``, letting every task that wakes up run."""
    while seconds > 0:
        clock.jump(min(step_s, seconds))
        seconds -= step_s
        await trio.testing.wait_all_tasks_blocked()


async def test_agents_expire_after_missed_heartbeats(
    embedded_only: Store, mock_clock: trio.testing.MockClock
) -> None:
    bus = AgentBus(embedded_only)
    await bus.heartbeat("gone")
    await bus.heartbeat("staying")
    await advance(mock_clock, PRESENCE_S / 2)
    await bus.heartbeat("staying")
    await advance(mock_clock, PRESENCE_S / 2 + 1)
    assert await bus.agents() == ["staying"]
    sent = await bus.broadcast(type="event", payload=None, sender="cli")
    assert sent.recipients == ("staying",)
    assert await bus.receive_nowait("gone", 5) == []


async def test_a_long_wait_and_an_open_inbox_keep_their_agents_present(
    embedded_only: Store, mock_clock: trio.testing.MockClock
) -> None:
    bus = AgentBus(embedded_only)
    await bus.heartbeat("waiting")  # registered (and its journal record written) up front
    await bus.heartbeat("busy")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.receive, "waiting", 1)
        async with bus.inbox("busy"):
            await advance(mock_clock, PRESENCE_S * 4)  # busy elsewhere, not receiving
            assert await bus.agents() == ["busy", "waiting"]
        nursery.cancel_scope.cancel()
    await advance(mock_clock, PRESENCE_S + 1)
    assert await bus.agents() == []


async def test_a_handover_never_begun_is_handed_back_after_the_grace(
    embedded_only: Store, mock_clock: trio.testing.MockClock
) -> None:
    bus = AgentBus(embedded_only)
    await bus.send("lost", type="event", payload={"name": "m1"}, sender="cli")
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        handover = await bus.take("lost", 5)  # and its response is never begun
        await advance(mock_clock, HANDOVER_S / 2)
        assert handover.state is HandoverState.PENDING
        await advance(mock_clock, HANDOVER_S)
        for _ in range(500):  # the hand back is a journal write, in real time
            if handover.state is HandoverState.RETURNED:
                break
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        assert handover.state is HandoverState.RETURNED
        assert handover.start() == []  # a response begun this late sends nothing
        nursery.cancel_scope.cancel()
    assert names(await bus.receive_nowait("lost", 5)) == ["m1"]
