"""Pipelines and subscriptions see their client only through the small interfaces.

Each is driven here by a host that offers nothing but the members of its
protocol, forwarded to a real client: reaching for anything else (the pool,
the connector, the breaker) would be an ``AttributeError``.
"""

from __future__ import annotations

from typing import Any

import trio

from autobot.redis import Pipeline, PubSub, Redis
from autobot.redis._interfaces import PipelineHost, SubscriptionHost


class Only:
    """Forwards exactly the names a protocol declares to ``client``."""

    def __init__(self, client: Redis, protocol: type) -> None:
        names = {
            name
            for klass in protocol.__mro__
            if klass is not object
            for name in (*vars(klass), *getattr(klass, "__annotations__", {}))
            if not name.startswith("_")
        }
        self._client = client
        self._names = names

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get("_names", ()):
            return getattr(self._client, name)
        raise AttributeError(f"not part of the interface: {name}")


async def test_a_pipeline_needs_only_its_host_interface(client: Redis) -> None:
    host: PipelineHost = Only(client, PipelineHost)  # type: ignore[assignment]
    async with Pipeline(host, transaction=True) as pipe:
        pipe.set("a", "1").incr("a").hgetall("missing")
        assert await pipe.execute() == [True, 2, {}]
    async with Pipeline(host) as pipe:
        await pipe.watch("a")
        assert await pipe.get("a") == "2"
        pipe.multi()
        pipe.set("a", "3")
        assert await pipe.execute() == [True]
    assert await client.get("a") == "3"


async def test_a_subscription_needs_only_its_host_interface(client: Redis) -> None:
    host: SubscriptionHost = Only(client, SubscriptionHost)  # type: ignore[assignment]
    async with PubSub(host) as pubsub:
        await pubsub.subscribe("news")
        await client.publish("news", "hello")
        with trio.fail_after(2):
            message = await pubsub.get_message()
    assert message["data"] == "hello"


async def test_one_conversion_for_commands_and_pipelines(client: Redis) -> None:
    client.set_response_callback("GET", lambda reply, **options: ("converted", reply))
    await client.set("k", "v")
    assert await client.get("k") == ("converted", "v")
    assert await client.execute_command("get", "k") == ("converted", "v")
    async with client.pipeline(transaction=False) as pipe:
        pipe.get("k")
        assert await pipe.execute() == [("converted", "v")]
