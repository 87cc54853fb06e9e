"""TLS (``rediss://``) against real TLS-only redis-servers, certificates from trustme."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from autobot import RedisUnavailable
from autobot.redis import open_redis, parse_redis_url
from autobot.redis._dial import Dialer
from autobot.redis._endpoints import resolve
from autobot.redis._protocol import ReplyParser
from autobot.redis._tls import TLSConnection
from tests.support.redis_server import RedisProcess, RedisProcesses, TLSFiles, eventually


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return TLSFiles.make(tmp_path / "tls")


@pytest.fixture
def tls_server(processes: RedisProcesses, tls: TLSFiles) -> RedisProcess:
    """TLS only, and (Redis's default) a client certificate required."""
    return processes.redis(tls=tls)


def url_of(server: RedisProcess, query: str) -> str:
    return f"rediss://127.0.0.1:{server.port}/0?{query}"


async def test_commands_pipelines_pubsub_and_blocking_over_tls(tls_server: RedisProcess) -> None:
    big = b"x" * (3 * 1024 * 1024)  # several TLS records and partial socket writes
    async with open_redis(tls_server.url) as client:
        assert await client.set("k", "v") is True
        assert await client.get("k") == b"v"
        await client.set("big", big)
        assert await client.get("big") == big
        async with client.pipeline() as pipe:
            pipe.incr("n").incr("n").get("n")
            assert await pipe.execute() == [1, 2, b"2"]
        results = []

        async def one(index: int) -> None:
            results.append(await client.incr("many"))

        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(one, index)
        assert sorted(results) == list(range(1, 51))
        with trio.move_on_after(0.3):
            assert await client.blpop(["queue"], timeout=0.1) is None
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("news")
            await client.publish("news", "over tls")
            with trio.fail_after(2):
                assert (await pubsub.get_message())["data"] == b"over tls"
        shared = client.pool.shared_now()
        assert shared is not None and isinstance(shared.connection, TLSConnection)
    assert tls_server.command("GET", "k") == "v"


async def test_a_client_certificate_is_required_when_the_server_asks(
    tls_server: RedisProcess, tls: TLSFiles
) -> None:
    async with open_redis(url_of(tls_server, tls.query(client_cert=False))) as client:
        with pytest.raises(RedisUnavailable, match=r"cannot connect to Redis.*certificate"):
            await client.ping()
    async with open_redis(url_of(tls_server, tls.query(client_cert=True))) as client:
        assert await client.ping() is True


async def test_no_client_certificate_needed_when_the_server_does_not_ask(
    processes: RedisProcesses, tls: TLSFiles
) -> None:
    server = processes.redis("--tls-auth-clients", "no", tls=tls)
    async with open_redis(url_of(server, tls.query(client_cert=False))) as client:
        assert await client.ping() is True


async def test_a_wrong_ca_is_a_clear_redis_unavailable(
    tls_server: RedisProcess, tmp_path: Path
) -> None:
    other = TLSFiles.make(tmp_path / "other-ca")
    async with open_redis(url_of(tls_server, other.query())) as client:
        with pytest.raises(RedisUnavailable) as caught:
            await client.ping()
    message = str(caught.value)
    assert "cannot connect to Redis" in message
    assert "TLS handshake failed: certificate verify failed" in message
    assert f"127.0.0.1:{tls_server.port}" in message
    # Without verification (ssl_cert_reqs=none) the server's certificate is
    # accepted, but the server still refuses a client certificate it does not trust.
    unverified = url_of(tls_server, other.query() + "&ssl_cert_reqs=none")
    async with open_redis(unverified) as client:
        with pytest.raises(RedisUnavailable, match="unknown ca"):
            await client.ping()
    loose = url_of(tls_server, "ssl_cert_reqs=none&" + tls_server.tls.query().split("&", 1)[1])  # type: ignore[union-attr]
    async with open_redis(loose) as client:
        assert await client.ping() is True


async def test_the_host_name_is_checked(
    processes: RedisProcesses, tls_server: RedisProcess, tls: TLSFiles, tmp_path: Path
) -> None:
    # The URL's host name is what the certificate must name.
    async with open_redis(f"rediss://localhost:{tls_server.port}/0?{tls.query()}") as client:
        assert await client.ping() is True
    elsewhere = TLSFiles.make(tmp_path / "elsewhere", names=("redis.example",))
    server = processes.redis(tls=elsewhere)
    async with open_redis(url_of(server, elsewhere.query())) as client:
        with pytest.raises(RedisUnavailable, match=r"certificate verify failed.*mismatch"):
            await client.ping()
    async with open_redis(
        url_of(server, elsewhere.query() + "&ssl_check_hostname=false")
    ) as client:
        assert await client.ping() is True


async def test_unloadable_files_are_a_value_error_at_open(tls_server: RedisProcess) -> None:
    with pytest.raises(ValueError, match="ssl_ca_certs"):
        async with open_redis(url_of(tls_server, "ssl_ca_certs=/no/such/ca.pem")):
            pass  # pragma: no cover - refused before the block


async def test_an_idle_tls_connection_is_clean_until_the_server_closes_it(
    tls_server: RedisProcess,
) -> None:
    url = parse_redis_url(tls_server.url)
    dialer = Dialer.for_options(url.tls)
    target = await resolve(url.endpoints[0])
    with trio.fail_after(2):
        connection = await dialer.open(target, ReplyParser(), label="tls", generation=0)
    try:
        assert await connection.request(b"*1\r\n$4\r\nPING\r\n") == [b"PONG"]
        await trio.sleep(0.05)  # TLS 1.3 session tickets may arrive meanwhile: not replies
        assert not connection.peer_closed_or_dirty()
        assert tls_server.command("CLIENT", "KILL", "TYPE", "normal") >= 1
        await eventually(connection.peer_closed_or_dirty, "the closed connection to show")
    finally:
        connection.close()


async def test_random_cancellations_never_cross_replies_over_tls(tls_server: RedisProcess) -> None:
    size = 256 * 1024
    values = {f"big:{index}": (f"<{index}>".encode() * size)[:size] for index in range(6)}
    async with open_redis(tls_server.url) as client:
        await client.mset(values)
        outcomes = {"completed": 0, "cancelled": 0}

        async def hammer(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(40):
                key = rng.choice(list(values))
                writing = rng.random() < 0.3
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:

                        async def cancel_soon(passes: int) -> None:
                            for _ in range(passes):
                                await trio.lowlevel.checkpoint()
                            scope.cancel()

                        if rng.random() < 0.5:
                            nursery.start_soon(cancel_soon, rng.randrange(0, 6))
                        # Writers of big values are cut off mid-send too; the
                        # bytes already encrypted must still go out whole.
                        if writing:
                            await client.set(key, values[key])
                        else:
                            assert await client.get(key) == values[key]
                        nursery.cancel_scope.cancel()
                outcomes["cancelled" if scope.cancelled_caught else "completed"] += 1

        async with trio.open_nursery() as nursery:
            for seed in range(6):
                nursery.start_soon(hammer, seed)
        assert outcomes["cancelled"] > 10 and outcomes["completed"] > 10, outcomes
        for key, value in values.items():
            assert await client.get(key) == value
        assert client.stats()["breaker"]["total_failures"] == 0


async def test_sentinel_over_tls(processes: RedisProcesses, tls: TLSFiles) -> None:
    master = processes.redis(tls=tls)
    sentinels = processes.sentinels(master, expect_replicas=0, tls=tls)
    url = f"rediss+sentinel://127.0.0.1:{sentinels[0].port}/autobot?{tls.query()}"
    async with open_redis(url, decode_responses=True) as client:
        await client.set("via", "sentinel")
        assert master.command("GET", "via") == "sentinel"
        described = client.stats()["endpoints"]
        assert described["mode"] == "sentinel"
        assert described["preferred"] == f"127.0.0.1:{master.port}"


async def test_a_writer_cancelled_mid_send_over_tls_leaves_the_stream_whole(
    processes: RedisProcesses, tls: TLSFiles, set_deadlines
) -> None:  # type: ignore[no-untyped-def]
    # A frozen server stops reading, so the kernel's buffers fill and the TLS
    # connection holds encrypted bytes it accepted (unsent). The writer is
    # cancelled there; the next writer must send exactly the rest. (A long
    # command budget: 32 MiB through TLS on a loaded machine takes a while.)
    set_deadlines({"redis.command": 20.0})
    server = processes.redis(tls=tls)
    big = bytes(range(256)) * (128 * 1024)  # 32 MiB, far more than loopback buffers hold
    async with open_redis(server.url) as client:
        await client.set("small", "kept")
        shared = client.pool.shared_now()
        assert shared is not None
        connection = shared.connection
        got: list[bytes] = []
        server.freeze()
        try:
            async with trio.open_nursery() as nursery:
                writer = trio.CancelScope()

                async def set_big() -> None:
                    with writer:
                        await client.set("big", big)

                nursery.start_soon(set_big)
                # Stuck with encrypted bytes the kernel did not take: cancel it there.
                await eventually(lambda: connection.unsent > 0, "the kernel's buffers to fill")
                writer.cancel()
                await trio.sleep(0.05)
                assert writer.cancelled_caught and shared.in_flight == 1  # still owed

                async def get_small() -> None:
                    got.append(await client.get("small"))

                nursery.start_soon(get_small)
                await trio.sleep(0.05)
                server.thaw()
        finally:
            server.thaw()
        assert got == [b"kept"]
        assert await client.get("big") == big  # the cancelled SET still went out whole
        assert client.stats()["pool"]["shared"]["opened"] == 1
