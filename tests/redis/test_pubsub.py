"""Pub/sub: delivery, patterns, cancellation, and re-subscription after a dropped connection."""

from __future__ import annotations

import trio

from autobot import RedisUnavailable
from autobot.redis import Redis, open_redis
from tests.support.redis_server import RedisProcess


async def test_messages_are_delivered_in_order(client: Redis) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("news", "alerts")
        for index in range(5):
            assert await client.publish("news", f"item {index}") == 1
        await client.publish("alerts", "fire")
        received = []
        with trio.fail_after(2):
            async for message in pubsub:
                received.append((message["channel"], message["data"]))
                if len(received) == 6:
                    break
    assert received == [("news", f"item {index}") for index in range(5)] + [("alerts", "fire")]


async def test_pattern_subscriptions(client: Redis) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.psubscribe("chat:*")
        await client.publish("chat:42", "hello")
        with trio.fail_after(2):
            message = await pubsub.get_message()
    assert message == {
        "type": "pmessage",
        "pattern": "chat:*",
        "channel": "chat:42",
        "data": "hello",
    }


async def test_unsubscribe_stops_delivery(client: Redis) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("a", "b")
        await pubsub.unsubscribe("a")
        with trio.fail_after(2):
            while True:
                if not (await client.pubsub_numsub("a"))[0][1]:
                    break
                await trio.sleep(0.01)
        assert await client.publish("a", "lost") == 0
        await client.publish("b", "kept")
        with trio.fail_after(2):
            assert (await pubsub.get_message())["data"] == "kept"
        assert list(pubsub.channels) == [b"b"]


async def test_waiting_for_a_message_is_cancellable_and_resumable(client: Redis) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("quiet")
        with trio.move_on_after(0.05) as scope:
            await pubsub.get_message()
        assert scope.cancelled_caught
        await client.publish("quiet", "after")
        with trio.fail_after(2):
            assert (await pubsub.get_message())["data"] == "after"
        assert pubsub.reconnects == 0


async def test_resubscribes_after_client_kill(client: Redis, shared_redis: RedisProcess) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("events")
        await pubsub.psubscribe("logs:*")
        assert shared_redis.command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        received: list[str] = []
        async with trio.open_nursery() as nursery:

            async def listen() -> None:
                async for message in pubsub:
                    received.append(message["data"])
                    if {"event", "log"} <= set(received):
                        return

            nursery.start_soon(listen)
            with trio.fail_after(5):
                # Publish until the re-subscribed connection gets both kinds.
                while not {"event", "log"} <= set(received):
                    await client.publish("events", "event")
                    await client.publish("logs:app", "log")
                    await trio.sleep(0.02)
        assert pubsub.reconnects == 1


async def test_resubscribes_after_a_restart(processes) -> None:  # type: ignore[no-untyped-def]
    server = processes.redis()
    async with open_redis(server.url, decode_responses=True) as client:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("events")
            server.stop()
            server.start()
            got: list[str] = []
            async with trio.open_nursery() as nursery:

                async def listen() -> None:
                    got.append((await pubsub.get_message())["data"])

                nursery.start_soon(listen)
                with trio.fail_after(5):
                    while not got:
                        try:
                            await client.publish("events", "back")
                        except RedisUnavailable:  # the client's own connection reconnects too
                            pass
                        await trio.sleep(0.05)
            assert got == ["back"] and pubsub.reconnects >= 1


async def test_silent_connection_is_noticed_by_ping(processes, set_deadlines) -> None:  # type: ignore[no-untyped-def]
    set_deadlines({"redis.command": 0.2, "redis.connect": 0.2})
    server = processes.redis()
    async with open_redis(server.url, decode_responses=True, pubsub_idle_s=0.1) as client:
        assert client.pubsub_idle_s == 0.1
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("events")
            server.freeze()
            with trio.move_on_after(0.6):
                await pubsub.get_message()
            server.thaw()
            got: list[str] = []
            async with trio.open_nursery() as nursery:

                async def listen() -> None:
                    got.append((await pubsub.get_message())["data"])

                nursery.start_soon(listen)
                with trio.fail_after(5):
                    while not got:
                        await client.publish("events", "alive")
                        await trio.sleep(0.05)
            assert got == ["alive"]
            assert pubsub.reconnects >= 1


def test_a_subscription_closes_outside_a_trio_run(redis_url: str) -> None:
    # An async generator holding a subscription may be finalized by the garbage
    # collector after its run ended: closing must not need a Trio context.
    pubsubs = []

    async def subscribe() -> None:
        async with open_redis(redis_url) as client:
            pubsub = client.pubsub()
            await pubsub.subscribe("events")
            pubsubs.append(pubsub)

    trio.run(subscribe)
    pubsubs[0].close()  # no Trio run here: must not raise
