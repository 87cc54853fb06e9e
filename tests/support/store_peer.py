"""A second AutoBot process on a shared Redis, for cross-process tests.

    python -m tests.support.store_peer <redis url>

Creates a chat named "from the peer" with one message, prints ``ready <chat
id>`` once it is subscribed to the channel "ping", then answers every message
published there by appending it to its chat and publishing ``{"pong": ...}`` on
"pong", until it is killed.
"""

from __future__ import annotations

import sys

import trio

from autobot.redis import open_redis
from autobot.storage import open_redis_store


async def main(url: str) -> None:
    async with open_redis(url, decode_responses=True) as client, open_redis_store(client) as store:
        chat = await store.create_chat("from the peer")
        await store.append_message(chat.id, "user", "written by the peer")
        async with store.subscribe("ping") as pings:
            sys.stdout.write(f"ready {chat.id}\n")
            sys.stdout.flush()
            async for ping in pings:
                await store.append_message(chat.id, "user", f"ping {ping['n']}")
                await store.publish("pong", {"pong": ping["n"]})


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
