"""A process that writes to an embedded store as fast as it can, reporting acks.

    python -m tests.support.store_writer <store dir> <compact_after_bytes> [fsize_limit]

Prints ``ready <chat id>`` once the store is open, then ``ack <content>`` for
every append the store acknowledged, flushed at once, until it is killed. With
``fsize_limit``, the process may not grow any file past that many bytes
(RLIMIT_FSIZE), so journal writes start failing; it then prints ``failed
<code> <content>`` for each refused append, raises the limit again after a few failures,
and goes on (``recovered`` when the next append succeeds).
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

import trio

from autobot import ServiceUnavailable
from autobot.storage import open_embedded_store


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(directory: Path, compact_after_bytes: int, fsize_limit: int | None) -> None:
    async with open_embedded_store(directory, compact_after_bytes=compact_after_bytes) as store:
        chats = await store.list_chats(limit=1)
        chat = chats[0] if chats else await store.create_chat("burst")
        say(f"ready {chat.id}")
        if fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, resource.RLIM_INFINITY))
        failures = 0
        recovering = False

        async def writer(worker: int) -> None:
            nonlocal failures, recovering
            for n in range(1_000_000):
                content = f"w{worker}-{n}-" + "z" * (n % 300)
                try:
                    await store.append_message(chat.id, "user", content)
                except ServiceUnavailable as error:
                    failures += 1
                    say(f"failed {error.code} {content}")
                    if failures >= 3:
                        resource.setrlimit(
                            resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
                        )
                        recovering = True
                    continue
                if recovering:
                    recovering = False
                    say("recovered")
                say(f"ack {content}")

        async with trio.open_nursery() as nursery:
            for worker in range(8):
                nursery.start_soon(writer, worker)


if __name__ == "__main__":
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), limit)
