"""The Redis backend across processes, and when Redis goes away."""

from __future__ import annotations

import sys

import pytest
import trio

from autobot import CircuitBreaker, RedisUnavailable
from autobot.redis import open_redis
from autobot.storage import open_redis_store
from tests.support.process import ROOT
from tests.support.redis_server import RedisProcesses


async def test_two_processes_share_writes_and_fanout(shared_redis) -> None:
    shared_redis.command("FLUSHALL")
    peer = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.support.store_peer", shared_redis.url],
        stdout=-1,
        cwd=str(ROOT),
    )
    try:
        async with open_redis(shared_redis.url, decode_responses=True) as client:
            async with open_redis_store(client) as store:
                assert peer.stdout is not None
                line = b""
                with trio.fail_after(15):
                    while not line.endswith(b"\n"):
                        line += await peer.stdout.receive_some()
                kind, peer_chat_id = line.decode().split()
                assert kind == "ready"

                # The peer's write is visible here...
                (chat,) = await store.list_chats()
                assert (chat.id, chat.title, chat.message_count) == (
                    peer_chat_id,
                    "from the peer",
                    1,
                )

                # ...and messages cross both ways through Redis pub/sub.
                async with store.subscribe("pong") as pongs:
                    for n in range(3):
                        await store.publish("ping", {"n": n})
                    received = []
                    with trio.fail_after(5):
                        async for pong in pongs:
                            received.append(pong)
                            if len(received) == 3:
                                break
                assert received == [{"pong": 0}, {"pong": 1}, {"pong": 2}]
                contents = [m.content for m in await store.get_messages(peer_chat_id)]
                assert contents == ["written by the peer", "ping 0", "ping 1", "ping 2"]
    finally:
        peer.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await peer.wait()


async def test_calls_fail_fast_while_redis_is_down_and_recover(tmp_path, set_deadlines) -> None:
    set_deadlines({"redis.connect": 0.2, "redis.command": 0.3})
    processes = RedisProcesses(tmp_path / "redis")
    server = processes.redis()
    try:
        breaker = CircuitBreaker(
            "redis",
            open_error=lambda wait_s: RedisUnavailable(f"circuit open for {wait_s:.1f} s"),
            failure_threshold=3,
            cooldown_s=0.5,
        )
        async with open_redis(server.url, decode_responses=True, breaker=breaker) as client:
            async with open_redis_store(client) as store:
                chat = await store.create_chat("before")
                server.kill()

                failures = []
                started = trio.current_time()
                for _ in range(10):
                    call_started = trio.current_time()
                    with pytest.raises(RedisUnavailable):
                        await store.get_chat(chat.id)
                    failures.append(trio.current_time() - call_started)
                # Each failure is bounded by the Redis deadlines, and once the
                # breaker is open they take no time at all.
                assert max(failures) < 1.0
                assert failures[-1] < 0.05
                assert client.breaker.state.value == "open"
                assert trio.current_time() - started < 5

                server.start()  # same port, empty (nothing persisted)
                with trio.fail_after(15):
                    while True:
                        try:
                            await store.create_chat("after")
                            break
                        except RedisUnavailable:
                            await trio.sleep(0.2)
                assert [c.title for c in await store.list_chats()] == ["after"]
    finally:
        processes.stop_all()


async def test_a_reader_behind_the_trimmed_fact_log_is_told_to_rebuild(shared_redis) -> None:
    shared_redis.command("FLUSHALL")
    async with open_redis(shared_redis.url, decode_responses=True) as client:
        async with open_redis_store(client) as store:
            start = await store.fact_log_position()
            for n in range(3):
                await store.put_fact(f"fact {n}")
            await client.xtrim(store.prefix + "factlog", maxlen=1, approximate=False)
            assert await store.read_fact_log(start) is None
            kept = await store.read_fact_log(start + 2)
            assert kept is not None and [c.seq for c in kept] == [start + 3]
            shared_redis.command("FLUSHALL")  # a reset log: its positions start over
            assert await store.read_fact_log(start + 3) is None


async def test_an_answer_in_progress_expires_by_itself_and_ends_without_keys(shared_redis) -> None:
    shared_redis.command("FLUSHALL")
    async with open_redis(shared_redis.url, decode_responses=True) as client:
        async with open_redis_store(client) as store:
            chat = await store.create_chat()
            await store.begin_answer(chat.id, "a1")
            assert await store.append_answer_tokens(chat.id, "a1", 1, ["hi"], "c", [{"type": "t"}])
            answering, stream = store.prefix + "answering:" + chat.id, store.prefix + "answer:a1"
            assert 0 < await client.ttl(answering) <= 900
            assert 0 < await client.ttl(stream) <= 900
            await store.end_answer(chat.id, "a1")
            assert await client.exists(answering, stream) == 0
