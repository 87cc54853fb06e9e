"""The storage contract: every backend passes every test here."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from autobot import NotFound, ServiceUnavailable
from autobot.storage import Message, Priority, Store, new_id, now
from tests.support.polling import eventually

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# -- chats ------------------------------------------------------------------------------


async def test_create_and_get_chat(store: Store) -> None:
    chat = await store.create_chat("Plans")
    assert chat.title == "Plans"
    assert chat.message_count == 0
    assert ISO_UTC.match(chat.created_at)
    assert chat.updated_at == chat.created_at
    assert await store.get_chat(chat.id) == chat


async def test_chat_title_defaults_and_ids_are_unique(store: Store) -> None:
    chats = [await store.create_chat() for _ in range(20)]
    assert {chat.title for chat in chats} == {"New chat"}
    assert len({chat.id for chat in chats}) == 20


async def test_unknown_chat_is_chat_not_found(store: Store) -> None:
    for attempt in (
        store.get_chat("nope"),
        store.delete_chat("nope"),
        store.append_message("nope", "user", "hi"),
        store.get_messages("nope"),
    ):
        with pytest.raises(NotFound) as caught:
            await attempt
        assert caught.value.code == "chat_not_found"


async def test_append_and_read_messages(store: Store) -> None:
    chat = await store.create_chat()
    user = await store.append_message(chat.id, "user", "What is Trio?")
    answer = await store.append_message(chat.id, "assistant", "A library.", status="cancelled")
    assert (user.role, user.content, user.status) == ("user", "What is Trio?", "complete")
    assert (answer.role, answer.status) == ("assistant", "cancelled")
    assert ISO_UTC.match(user.created_at)
    assert await store.get_messages(chat.id) == [user, answer]
    updated = await store.get_chat(chat.id)
    assert updated.message_count == 2
    assert updated.updated_at == answer.created_at


async def test_message_ranges_follow_slice_rules(store: Store) -> None:
    chat = await store.create_chat()
    for i in range(10):
        await store.append_message(chat.id, "user", f"m{i}")

    async def contents(start: int = 0, stop: int | None = None) -> list[str]:
        return [m.content for m in await store.get_messages(chat.id, start, stop)]

    assert await contents() == [f"m{i}" for i in range(10)]
    assert await contents(2, 5) == ["m2", "m3", "m4"]
    assert await contents(-3) == ["m7", "m8", "m9"]
    assert await contents(0, -8) == ["m0", "m1"]
    assert await contents(8, 100) == ["m8", "m9"]
    assert await contents(20) == []


async def test_list_chats_newest_first_with_counts(store: Store) -> None:
    first = await store.create_chat("first")
    second = await store.create_chat("second")
    third = await store.create_chat("third")
    assert [c.id for c in await store.list_chats()] == [third.id, second.id, first.id]

    await store.append_message(first.id, "user", "bump")
    await store.append_message(first.id, "assistant", "bumped")
    chats = await store.list_chats()
    assert [c.id for c in chats] == [first.id, third.id, second.id]
    assert [c.message_count for c in chats] == [2, 0, 0]


async def test_list_chats_limit_and_offset(store: Store) -> None:
    ids = [(await store.create_chat(str(i))).id for i in range(7)]
    newest_first = list(reversed(ids))
    assert [c.id for c in await store.list_chats(limit=3)] == newest_first[:3]
    assert [c.id for c in await store.list_chats(limit=3, offset=3)] == newest_first[3:6]
    assert [c.id for c in await store.list_chats(limit=3, offset=6)] == newest_first[6:]
    assert await store.list_chats(limit=3, offset=7) == []


async def test_delete_chat_removes_it_and_its_messages(store: Store) -> None:
    keep = await store.create_chat("keep")
    drop = await store.create_chat("drop")
    await store.append_message(drop.id, "user", "bye")
    await store.delete_chat(drop.id)
    with pytest.raises(NotFound):
        await store.get_chat(drop.id)
    with pytest.raises(NotFound):
        await store.get_messages(drop.id)
    assert [c.id for c in await store.list_chats()] == [keep.id]


async def test_concurrent_appends_to_one_chat_lose_and_mix_nothing(store: Store) -> None:
    chat = await store.create_chat()
    contents = [f"{i:03d}:" + "x" * (100 + i * 37) for i in range(100)]

    async with trio.open_nursery() as nursery:
        for content in contents:
            nursery.start_soon(store.append_message, chat.id, "user", content)

    messages = await store.get_messages(chat.id)
    assert sorted(m.content for m in messages) == sorted(contents)
    assert len({m.id for m in messages}) == 100
    assert (await store.get_chat(chat.id)).message_count == 100


async def test_cancelled_append_happens_whole_or_not_at_all(store: Store) -> None:
    chat = await store.create_chat()
    rng = random.Random(7)
    attempted = []
    for i in range(60):
        content = f"{i}:" + "y" * rng.randrange(1, 50_000)
        attempted.append(content)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.append_message, chat.id, "user", content)
            for _ in range(rng.randrange(0, 6)):
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    # Later appends still work, and every stored message is one attempt, whole, once.
    await store.append_message(chat.id, "user", "after")
    messages = await store.get_messages(chat.id)
    stored = [m.content for m in messages]
    assert stored[-1] == "after"
    assert len(set(stored)) == len(stored)
    assert set(stored[:-1]) <= set(attempted)
    assert (await store.get_chat(chat.id)).message_count == len(stored)


# -- knowledge facts -----------------------------------------------------------------------


async def test_facts_round_trip(store: Store) -> None:
    fact = await store.put_fact("Trio uses nurseries", {"source": "docs", "rank": 2})
    assert ISO_UTC.match(fact.created_at)
    assert await store.get_fact(fact.id) == fact
    other = await store.put_fact("Redis is fast")
    assert other.metadata == {}
    assert [f.id for f in await store.list_facts()] == [fact.id, other.id]
    await store.delete_fact(fact.id)
    assert [f.id for f in await store.list_facts()] == [other.id]
    for attempt in (store.get_fact(fact.id), store.delete_fact(fact.id)):
        with pytest.raises(NotFound) as caught:
            await attempt
        assert caught.value.code == "fact_not_found"


async def test_get_facts_reads_those_that_exist(store: Store) -> None:
    one, two = await store.put_fact("one"), await store.put_fact("two")
    await store.delete_fact(two.id)
    assert await store.get_facts([two.id, one.id, "nope"]) == {one.id: one}
    assert await store.get_facts([]) == {}


async def test_fact_log_numbers_every_change_in_order(store: Store) -> None:
    start = await store.fact_log_position()
    one = await store.put_fact("one")
    two = await store.put_fact("two")
    await store.delete_fact(one.id)
    assert await store.put_fact_vectors("m", {two.id: b"v2", one.id: b"gone"}) == [two.id]
    changes = await store.read_fact_log(start)
    assert changes is not None
    assert [(c.seq - start, c.op, c.id) for c in changes] == [
        (1, "add", one.id),
        (2, "add", two.id),
        (3, "delete", one.id),
        (4, "vectors", two.id),
    ]
    assert await store.fact_log_position() == start + 4
    later = await store.read_fact_log(start + 2, max_count=1)
    assert later is not None
    assert [c.id for c in later] == [one.id]


async def test_fact_log_read_waits_for_the_next_change(store: Store) -> None:
    position = await store.fact_log_position()
    seen: list = []

    async def reader() -> None:
        seen.extend(await store.read_fact_log(position) or [])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.05)
        assert seen == []
        fact = await store.put_fact("late")
    assert [(c.op, c.id) for c in seen] == [("add", fact.id)]


async def test_fact_log_read_with_nothing_new_returns_empty(store: Store) -> None:
    position = await store.fact_log_position()
    with trio.fail_after(5):
        assert await store.read_fact_log(position) == []


async def test_fact_log_from_beyond_its_end_says_rebuild(store: Store) -> None:
    await store.put_fact("one")
    position = await store.fact_log_position()
    with trio.fail_after(5):
        assert await store.read_fact_log(position + 1000) is None


async def test_fact_vectors_are_kept_per_model_and_go_with_their_fact(store: Store) -> None:
    one, two = await store.put_fact("one"), await store.put_fact("two")
    stored = await store.put_fact_vectors("a", {one.id: b"\x00a1", two.id: b"a2"})
    assert stored == [one.id, two.id]
    await store.put_fact_vectors("b", {one.id: b"b1"})
    await store.put_fact_vectors("a", {one.id: b"a1-new"})
    assert await store.get_fact_vectors("a", [one.id, "nope"]) == {one.id: b"a1-new"}
    assert await store.list_fact_vectors("b") == {one.id: b"b1"}
    await store.delete_fact(one.id)
    assert await store.list_fact_vectors("a") == {two.id: b"a2"}
    assert await store.list_fact_vectors("b") == {}
    assert await store.list_fact_vectors("never") == {}
    assert await store.put_fact_vectors("a", {}) == []


# -- operations and checkpoints -------------------------------------------------------------


async def test_operations_put_get_replace_list(store: Store) -> None:
    assert await store.get_operation("missing") is None
    first = {"id": "op1", "type": "index", "status": "queued", "progress": {"n": 0}}
    second = {"id": "op2", "type": "scan", "status": "queued", "progress": None}
    await store.put_operation(first)
    await store.put_operation(second)
    await store.put_operation({**first, "status": "running", "progress": {"n": 5}})
    assert await store.get_operation("op1") == {**first, "status": "running", "progress": {"n": 5}}
    assert [op["id"] for op in await store.list_operations()] == ["op2", "op1"]


async def test_returned_records_are_copies(store: Store) -> None:
    operation = {"id": "op", "progress": {"n": 1}}
    await store.put_operation(operation)
    operation["progress"]["n"] = 99
    fetched = await store.get_operation("op")
    assert fetched == {"id": "op", "progress": {"n": 1}}
    fetched["progress"]["n"] = 42
    assert (await store.get_operation("op"))["progress"] == {"n": 1}


async def test_checkpoints(store: Store) -> None:
    assert await store.get_checkpoint("op") is None
    await store.put_checkpoint("op", {"done": ["a.py"], "cursor": 1})
    await store.put_checkpoint("op", {"done": ["a.py", "b.py"], "cursor": 2})
    assert await store.get_checkpoint("op") == {"done": ["a.py", "b.py"], "cursor": 2}
    await store.delete_checkpoint("op")
    assert await store.get_checkpoint("op") is None
    await store.delete_checkpoint("op")  # deleting nothing is fine


# -- leases ---------------------------------------------------------------------------------


async def test_lease_claim_renew_release(store: Store) -> None:
    assert await store.lease_owner("job") is None
    assert await store.claim_lease("job", "worker-a", 30)
    assert not await store.claim_lease("job", "worker-b", 30)
    assert await store.claim_lease("job", "worker-a", 30)  # re-claiming your own is fine
    assert await store.lease_owner("job") == "worker-a"
    assert await store.renew_lease("job", "worker-a", 30)
    assert not await store.renew_lease("job", "worker-b", 30)
    assert not await store.release_lease("job", "worker-b")
    assert await store.release_lease("job", "worker-a")
    assert await store.lease_owner("job") is None
    assert await store.claim_lease("job", "worker-b", 30)


async def test_lease_lapses_after_its_ttl(store: Store) -> None:
    assert await store.claim_lease("job", "worker-a", 0.2)
    assert await store.lease_owner("job") == "worker-a"

    async def lapsed() -> bool:
        return await store.lease_owner("job") is None

    # Redis keeps the TTL on its own clock, so this waits in real time, by polling.
    with trio.fail_after(5):
        await eventually(lapsed, interval_s=0.02)
    assert not await store.renew_lease("job", "worker-a", 30)
    assert await store.claim_lease("job", "worker-b", 30)


# -- agent inboxes -----------------------------------------------------------------------------


async def test_inbox_highest_priority_first_then_fifo(store: Store) -> None:
    sent = [
        ("n1", Priority.NORMAL),
        ("l1", Priority.LOW),
        ("c1", Priority.CRITICAL),
        ("n2", Priority.NORMAL),
        ("h1", Priority.HIGH),
        ("c2", Priority.CRITICAL),
    ]
    for name, priority in sent:
        await store.push_inbox("planner", {"name": name}, priority)
    first = await store.pop_inbox("planner", 4)
    assert [m.body["name"] for m in first] == ["c1", "c2", "h1", "n1"]
    assert [m.priority for m in first] == [
        Priority.CRITICAL,
        Priority.CRITICAL,
        Priority.HIGH,
        Priority.NORMAL,
    ]
    rest = await store.pop_inbox("planner", 10)
    assert [m.body["name"] for m in rest] == ["n2", "l1"]
    assert await store.pop_inbox("planner", 10) == []


async def test_inbox_message_fields(store: Store) -> None:
    message_id = await store.push_inbox("a", {"type": "event", "payload": {"x": 1}}, Priority.HIGH)
    (message,) = await store.pop_inbox("a", 1)
    assert message.id == message_id
    assert message.body == {"type": "event", "payload": {"x": 1}}
    assert ISO_UTC.match(message.created_at)
    assert message.to_json()["priority"] == "high"


async def test_agents_register_and_list(store: Store) -> None:
    await store.register_agent("researcher")
    await store.register_agent("planner")
    await store.register_agent("planner")
    await store.push_inbox("coder", {"n": 1}, Priority.LOW)  # pushing registers too
    assert await store.list_agents() == ["coder", "planner", "researcher"]


async def test_inbox_takers_never_share_a_message(store: Store) -> None:
    for i in range(60):
        await store.push_inbox("busy", {"i": i}, Priority.NORMAL)
    taken: list[int] = []

    async def take() -> None:
        while True:
            messages = await store.pop_inbox("busy", 3)
            if not messages:
                return
            taken.extend(m.body["i"] for m in messages)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(take)
    assert sorted(taken) == list(range(60))


async def test_wait_inbox_wakes_on_push(store: Store) -> None:
    async def push_later() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the taker is waiting by now
        await store.push_inbox("sleepy", {"wake": True}, Priority.NORMAL)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(push_later)
        with trio.fail_after(5):
            messages = await store.wait_inbox("sleepy", 10)
    assert [m.body for m in messages] == [{"wake": True}]


async def test_wait_inbox_returns_at_once_when_not_empty(store: Store) -> None:
    await store.push_inbox("ready", {"n": 1}, Priority.NORMAL)
    with trio.fail_after(5):
        assert [m.body for m in await store.wait_inbox("ready", 10)] == [{"n": 1}]


async def test_cancelled_wait_loses_no_message(store: Store) -> None:
    with trio.move_on_after(0.1) as scope:
        await store.wait_inbox("patient", 10)
    assert scope.cancelled_caught
    await store.push_inbox("patient", {"n": 1}, Priority.NORMAL)
    with trio.move_on_after(0.05):
        await store.wait_inbox("other", 1)
    assert [m.body for m in await store.pop_inbox("patient", 10)] == [{"n": 1}]


async def test_cancelled_pop_loses_no_message(store: Store) -> None:
    # Cancelled after more and more scheduling steps: before, during and after its write.
    for steps in range(40):
        await store.push_inbox("hasty", {"i": steps}, Priority.NORMAL)
        got: list[int] = []
        scope = trio.CancelScope()

        async def take(scope: trio.CancelScope = scope, got: list[int] = got) -> None:
            with scope:
                got.extend(m.body["i"] for m in await store.pop_inbox("hasty", 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            for _ in range(steps):
                await trio.lowlevel.checkpoint()
            scope.cancel()
        # A write after it: whatever the cancelled pop still had on its way is done by now.
        await store.push_inbox("bystander", {"i": steps}, Priority.NORMAL)
        rest = [m.body["i"] for m in await store.pop_inbox("hasty", 10)]
        assert got + rest == [steps], steps


async def test_returned_messages_come_back_first_in_their_priority(store: Store) -> None:
    for name, priority in [("n1", Priority.NORMAL), ("n2", Priority.NORMAL), ("h1", Priority.HIGH)]:
        await store.push_inbox("planner", {"name": name}, priority)
    taken = await store.pop_inbox("planner", 2)
    assert [m.body["name"] for m in taken] == ["h1", "n1"]
    await store.push_inbox("planner", {"name": "n3"}, Priority.NORMAL)
    await store.push_inbox("planner", {"name": "l1"}, Priority.LOW)
    await store.return_inbox("planner", taken)
    again = await store.pop_inbox("planner", 10)
    assert [m.body["name"] for m in again] == ["h1", "n1", "n2", "n3", "l1"]
    assert [(m.id, m.priority, m.created_at) for m in again[:2]] == [
        (m.id, m.priority, m.created_at) for m in taken
    ]
    assert await store.pop_inbox("planner", 10) == []


async def test_a_message_returned_at_once_is_taken_once(store: Store) -> None:
    await store.push_inbox("echo", {"n": 1}, Priority.NORMAL)
    for _ in range(3):
        taken = await store.pop_inbox("echo", 5)
        assert [m.body for m in taken] == [{"n": 1}]
        await store.return_inbox("echo", taken)
    assert [m.body for m in await store.pop_inbox("echo", 5)] == [{"n": 1}]
    assert await store.pop_inbox("echo", 5) == []


async def test_a_message_returned_behind_a_newer_one_keeps_its_place(store: Store) -> None:
    await store.push_inbox("q", {"n": 1}, Priority.NORMAL)
    (first,) = await store.pop_inbox("q", 1)
    await store.push_inbox("q", {"n": 2}, Priority.NORMAL)
    (second,) = await store.pop_inbox("q", 1)
    await store.return_inbox("q", [second])
    await store.return_inbox("q", [first])
    assert [m.body["n"] for m in await store.pop_inbox("q", 5)] == [1, 2]


async def test_return_inbox_wakes_a_waiter(store: Store) -> None:
    await store.push_inbox("waiter", {"n": 1}, Priority.HIGH)
    taken = await store.pop_inbox("waiter", 1)

    async def hand_back_later() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await store.return_inbox("waiter", taken)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hand_back_later)
        with trio.fail_after(5):
            again = await store.wait_inbox("waiter", 5)
    assert [(m.id, m.body) for m in again] == [(taken[0].id, {"n": 1})]


async def test_push_inbox_many_queues_one_copy_per_agent(store: Store) -> None:
    ids = await store.push_inbox_many(["b", "a", "b"], {"hello": True}, Priority.HIGH)
    assert len(ids) == 2 and len(set(ids)) == 2
    for agent in ("a", "b"):
        (copy,) = await store.pop_inbox(agent, 5)
        assert copy.body == {"hello": True} and copy.priority is Priority.HIGH
    assert await store.list_agents() == ["a", "b"]
    assert await store.push_inbox_many([], {"nobody": True}, Priority.LOW) == []


async def test_push_inbox_many_keeps_each_inbox_in_order(store: Store) -> None:
    await store.push_inbox("a", {"n": 1}, Priority.NORMAL)
    await store.push_inbox_many(["a", "b"], {"n": 2}, Priority.NORMAL)
    await store.push_inbox("a", {"n": 3}, Priority.NORMAL)
    assert [m.body["n"] for m in await store.pop_inbox("a", 5)] == [1, 2, 3]


async def test_touched_agents_are_live_until_their_ttl_lapses(store: Store) -> None:
    await store.register_agent("quiet")
    await store.touch_agent("steady", 30)
    await store.touch_agent("brief", 0.05)
    assert await store.live_agents() == ["brief", "steady"]
    assert await store.list_agents() == ["brief", "quiet", "steady"]

    async def lapsed() -> bool:
        return await store.live_agents() == ["steady"]

    # Redis keeps presence on its own clock, so this waits in real time, by polling.
    with trio.fail_after(5):
        await eventually(lapsed, interval_s=0.02)
    await store.touch_agent("brief", 30)  # back again
    assert await store.live_agents() == ["brief", "steady"]


# -- publish / subscribe ----------------------------------------------------------------------


async def _collect(messages: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    received = []
    with trio.fail_after(5):
        async for message in messages:
            received.append(message)
            if len(received) == count:
                return received
    return received


async def test_every_subscriber_receives_in_order(store: Store) -> None:
    async with store.subscribe("chat:1") as first, store.subscribe("chat:1") as second:
        async with store.subscribe("chat:2") as elsewhere:
            for i in range(20):
                await store.publish("chat:1", {"i": i})
            await store.publish("chat:2", {"other": True})
            expected = [{"i": i} for i in range(20)]
            assert await _collect(first, 20) == expected
            assert await _collect(second, 20) == expected
            assert await _collect(elsewhere, 1) == [{"other": True}]


async def test_publish_without_subscribers_is_fine(store: Store) -> None:
    await store.publish("nobody", {"x": 1})
    async with store.subscribe("nobody") as messages:
        await store.publish("nobody", {"x": 2})
        assert await _collect(messages, 1) == [{"x": 2}]


async def test_subscriber_that_falls_behind_is_dropped(store: Store) -> None:
    async with store.subscribe("firehose") as slow, store.subscribe("firehose") as fast:
        received = []

        async def read_fast() -> None:
            async for message in fast:
                received.append(message["i"])
                if message["i"] == 2999:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            for i in range(3000):
                await store.publish("firehose", {"i": i})
        assert received == list(range(3000))
        with pytest.raises(ServiceUnavailable) as caught:
            with trio.fail_after(5):
                async for _ in slow:
                    pass
        assert caught.value.code == "subscriber_too_slow"


# -- migration ---------------------------------------------------------------------------------


async def test_export_then_import_reproduces_everything(store: Store, tmp_path) -> None:
    from autobot.storage import open_embedded_store

    older = await store.create_chat("older")
    newer = await store.create_chat("newer")
    await store.append_message(older.id, "user", "hello")
    await store.append_message(older.id, "assistant", "hi", status="failed")
    fact = await store.put_fact("fact", {"k": "v"})
    await store.put_fact_vectors("m", {fact.id: b"\x00\x01vector"})
    await store.put_operation({"id": "op", "status": "running"})
    await store.put_checkpoint("op", {"cursor": 3})
    await store.register_agent("idle")
    await store.push_inbox("busy", {"n": 1}, Priority.HIGH)

    records: list[dict] = []

    async def collect(record: dict) -> None:
        records.append(record)

    assert await store.export_records(collect) == len(records)
    assert {record["kind"] for record in records} == {
        "chat",
        "message",
        "fact",
        "fact_vectors",
        "operation",
        "checkpoint",
        "agent",
        "inbox_message",
    }

    async with open_embedded_store(tmp_path / "imported") as target:
        assert await target.import_records(records) == len(records)
        assert [c.id for c in await target.list_chats()] == [older.id, newer.id]
        assert await target.get_chat(older.id) == await store.get_chat(older.id)
        assert await target.get_messages(older.id) == await store.get_messages(older.id)
        assert await target.list_facts() == await store.list_facts()
        assert await target.list_fact_vectors("m") == {fact.id: b"\x00\x01vector"}
        assert await target.list_operations() == await store.list_operations()
        assert await target.get_checkpoint("op") == {"cursor": 3}
        assert await target.list_agents() == ["busy", "idle"]
        assert [m.body for m in await target.pop_inbox("busy", 5)] == [{"n": 1}]


async def test_unfinished_operations_are_listed_from_their_index(store: Store) -> None:
    for operation_id, status in [("a", "queued"), ("b", "completed"), ("c", "running")]:
        await store.put_operation({"id": operation_id, "status": status})
    assert [op["id"] for op in await store.list_operations(unfinished_only=True)] == ["c", "a"]
    await store.put_operation({"id": "a", "status": "cancelled"})
    await store.put_operation({"id": "b", "status": "queued"})  # resumed
    assert [op["id"] for op in await store.list_operations(unfinished_only=True)] == ["c", "b"]
    assert [op["id"] for op in await store.list_operations()] == ["c", "b", "a"]


async def test_a_checkpoint_and_its_operation_are_saved_together(store: Store) -> None:
    await store.put_operation({"id": "op", "status": "running", "checkpoint": None})
    record = {"id": "op", "status": "running", "checkpoint": {"processed_items": 3}}
    await store.put_checkpoint("op", {"state": {"next": 3}}, operation=record)
    assert await store.get_checkpoint("op") == {"state": {"next": 3}}
    assert await store.get_operation("op") == record
    assert [op["id"] for op in await store.list_operations(unfinished_only=True)] == ["op"]


# -- answers in progress ------------------------------------------------------------------


async def test_an_answer_in_progress_keeps_its_tokens_until_it_ends(store: Store) -> None:
    chat = await store.create_chat()
    assert await store.answer_progress(chat.id) is None
    await store.begin_answer(chat.id, "a1")
    progress = await store.answer_progress(chat.id)
    assert progress is not None and (progress.answer_id, progress.seq) == ("a1", 0)
    async with store.subscribe("chat-events") as events:
        deltas = ["Hel", "lo", " world"]
        tokens = [{"type": "token", "delta": d, "seq": seq} for seq, d in enumerate(deltas, 1)]
        channel = "chat-events"
        assert await store.append_answer_tokens(chat.id, "a1", 1, deltas[:1], channel, tokens[:1])
        assert await store.append_answer_tokens(chat.id, "a1", 2, deltas[1:], channel, tokens[1:])
        with trio.fail_after(5):
            seen = [await anext(events) for _ in range(3)]
    assert [event["seq"] for event in seen] == [1, 2, 3]
    progress = await store.answer_progress(chat.id)
    assert progress is not None
    assert (progress.seq, progress.text, progress.tokens[0]) == (3, "Hello world", "Hel")
    await store.end_answer(chat.id, "other")  # another answer's end leaves this one
    assert await store.answer_progress(chat.id) is not None
    await store.end_answer(chat.id, "a1")
    assert await store.answer_progress(chat.id) is None


async def test_a_new_answer_replaces_what_an_old_one_left(store: Store) -> None:
    chat = await store.create_chat()
    await store.begin_answer(chat.id, "old")
    assert await store.append_answer_tokens(chat.id, "old", 1, ["x"], "c", [{"type": "token"}])
    await store.begin_answer(chat.id, "new")
    progress = await store.answer_progress(chat.id)
    assert progress is not None and (progress.answer_id, progress.tokens) == ("new", ())


async def test_starting_an_answer_claims_the_chat_stores_the_message_and_returns_history(
    store: Store,
) -> None:
    chat = await store.create_chat()
    for n in range(4):
        await store.append_message(chat.id, "user", f"m{n}")
    opened = await store.start_answer(
        chat.id, "a1", "question", lease="answer:x", lease_ttl_s=30, history=3
    )
    assert opened is not None
    message, history = opened
    assert (message.role, message.content) == ("user", "question")
    assert [m.content for m in history] == ["m2", "m3", "question"]
    assert await store.lease_owner("answer:x") == "a1"
    progress = await store.answer_progress(chat.id)
    assert progress is not None and (progress.answer_id, progress.seq) == ("a1", 0)
    assert await store.answering(chat.id) == "a1"
    # Held by a1: a second answer changes nothing.
    again = await store.start_answer(
        chat.id, "a2", "other", lease="answer:x", lease_ttl_s=30, history=3
    )
    assert again is None
    assert [m.content for m in await store.get_messages(chat.id)][-1] == "question"
    with pytest.raises(NotFound):
        await store.start_answer("nope", "a3", "q", lease="answer:y", lease_ttl_s=30, history=3)
    assert await store.lease_owner("answer:y") is None


async def test_finishing_an_answer_stores_it_frees_the_chat_and_publishes_in_order(
    store: Store,
) -> None:
    chat = await store.create_chat()
    assert await store.start_answer(chat.id, "a1", "q", lease="L", lease_ttl_s=30, history=5)
    async with store.subscribe("events") as events:
        assert await store.append_answer_tokens(chat.id, "a1", 1, ["a"], "events", [{"n": 1}])
        answer = Message(new_id(), "assistant", "ab", now()[0], "complete")
        stored = await store.finish_answer(
            chat.id,
            "a1",
            answer,
            lease="L",
            channel="events",
            events=[{"n": 2}, {"n": 3}],
            gone_events=[{"n": "gone"}],
        )
        with trio.fail_after(5):
            seen = [await anext(events) for _ in range(3)]
    assert stored and seen == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert (await store.get_messages(chat.id))[-1] == answer
    assert await store.answer_progress(chat.id) is None
    assert await store.answering(chat.id) is None
    assert await store.lease_owner("L") is None


async def test_an_answer_whose_chat_was_deleted_records_nothing_and_publishes_gone(
    store: Store,
) -> None:
    chat = await store.create_chat()
    assert await store.start_answer(chat.id, "a1", "q", lease="L", lease_ttl_s=30, history=5)
    await store.delete_chat(chat.id)
    async with store.subscribe("events") as events:
        assert not await store.append_answer_tokens(chat.id, "a1", 1, ["a"], "events", [{"n": 1}])
        answer = Message(new_id(), "assistant", "a", now()[0], "cancelled")
        stored = await store.finish_answer(
            chat.id,
            "a1",
            answer,
            lease="L",
            channel="events",
            events=[{"n": "final"}],
            gone_events=[{"n": "gone"}],
        )
        with trio.fail_after(5):
            seen = await anext(events)
    assert not stored and seen == {"n": "gone"}
    assert await store.lease_owner("L") is None
