"""Background loops survive recoverable errors: garbled replies, refusals, silence.

Failover probes, Sentinel polling, the breaker's probe and a subscription's
reconnects each meet a fake peer (a loopback server written here) that
answers garbage; the loop must count it and go on, and a programming error
must still propagate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from autobot import BreakerState, RedisUnavailable
from autobot.redis import default_breaker, open_redis
from autobot.redis._connection import Connection
from autobot.redis._recovery import BreakerProbe
from tests.support.redis_server import RedisProcess, eventually

GARBAGE = b"@@@ this is not RESP\r\n"

Handler = Callable[[trio.SocketStream, int], Awaitable[None]]


class FakePeer:
    """A loopback TCP server; ``handler(stream, number)`` runs per connection (from 1)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.port = 0

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve_one, listeners)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await self._handler(stream, self.connections)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


async def answer_garbage(stream: trio.SocketStream, number: int) -> None:
    while await stream.receive_some():
        await stream.send_all(GARBAGE)


def bulk(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def test_failover_probes_go_on_after_garbled_replies(
    nursery: trio.Nursery, shared_redis: RedisProcess
) -> None:
    fake = FakePeer(answer_garbage)
    await nursery.start(fake.serve)
    async with open_redis(f"{shared_redis.url},{fake.url}") as client:
        # Each probe of the fake node gets a protocol error; the loop must
        # keep probing (several connections) and the client keep working.
        await eventually(lambda: fake.connections >= 3, "three probes of the fake node", 3)
        assert await client.ping() is True
        assert client.stats()["endpoints"]["nodes"][f"127.0.0.1:{fake.port}"] is False


async def test_sentinel_polling_goes_on_after_garbled_and_malformed_answers(
    nursery: trio.Nursery, shared_redis: RedisProcess
) -> None:
    async def sentinel(stream: trio.SocketStream, number: int) -> None:
        await stream.receive_some()
        if number == 1:
            await stream.send_all(GARBAGE)
        elif number == 2:
            await stream.send_all(bulk(b"127.0.0.1", b"not-a-port"))
        else:
            await stream.send_all(bulk(b"127.0.0.1", str(shared_redis.port).encode()))

    fake = FakePeer(sentinel)
    await nursery.start(fake.serve)
    async with open_redis(f"redis+sentinel://127.0.0.1:{fake.port}/autobot") as client:
        with trio.fail_after(3):
            while True:
                try:
                    assert await client.ping() is True
                    break
                except RedisUnavailable:
                    await trio.sleep(0.05)
        assert fake.connections >= 3
        assert client.stats()["endpoints"]["preferred"] == shared_redis.address


async def test_a_subscription_reconnects_after_a_garbled_reply(nursery: trio.Nursery) -> None:
    async def server(stream: trio.SocketStream, number: int) -> None:
        await stream.receive_some()  # SUBSCRIBE events
        await stream.send_all(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nevents\r\n:1\r\n")
        if number == 1:
            await stream.send_all(GARBAGE)
        else:
            await stream.send_all(bulk(b"message", b"events", b"hello"))
        await trio.sleep_forever()

    fake = FakePeer(server)
    await nursery.start(fake.serve)
    async with open_redis(fake.url, decode_responses=True) as client:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("events")
            with trio.fail_after(3):
                message = await pubsub.get_message()
    assert message["data"] == "hello"
    assert pubsub.reconnects == 1


async def test_the_breaker_probe_goes_on_after_garbled_replies(nursery: trio.Nursery) -> None:
    fake = FakePeer(answer_garbage)
    await nursery.start(fake.serve)
    async with open_redis(fake.url, breaker=default_breaker()) as client:
        for _ in range(5):
            with pytest.raises(Exception, match="Protocol error"):
                await client.ping()
        assert client.breaker.state is BreakerState.OPEN
        await eventually(
            lambda: client.stats()["recovery"]["failures"] >= 3, "three failed probes", 3
        )
        assert client.breaker.state is BreakerState.OPEN


async def test_the_breaker_probe_lets_programming_errors_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = default_breaker()
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    attempts = 0

    async def refused() -> Connection:
        nonlocal attempts
        attempts += 1
        await trio.lowlevel.checkpoint()
        if attempts < 5:
            raise ConnectionRefusedError("refused")
        raise TypeError("a bug, not an outage")

    probe = BreakerProbe(breaker, refused)
    with pytest.raises(TypeError, match="a bug"):
        await probe.run()
    assert (probe.probes, probe.failures) == (5, 4)
