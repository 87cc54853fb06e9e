"""Errors at the wire level: framing, authentication headers, Hypercorn's own answers, backlog.

Malformed requests go over raw sockets, since no HTTP client sends them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import subprocess
from dataclasses import dataclass, field

import httpx
import pytest
import trio
import trio_websocket
from quart import websocket

from autobot import Settings
from autobot.api import AutoBotApp, create_app
from tests.api.conftest import closed_port
from tests.support.process import run_server
from tests.support.serving import served

TOKEN = "s3cret-token"
ECHO = "/api/test/echo"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes = b""  # anything the server sent after this response
    closed: bool = False  # the server closed the connection after it
    raw: list[tuple[str, str]] = field(default_factory=list)


async def exchange(port: int, *parts: bytes, expect_close: bool = True) -> Reply:
    """Send ``parts`` (a short pause between them) and read one response.

    With ``expect_close`` it then reads to the end of the stream, which must
    come within 2 s; without, the connection is left open.
    """
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for index, part in enumerate(parts):
                if index:
                    await trio.sleep(0.05)
                await stream.send_all(part)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk, f"closed without an answer: {data!r}"
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            raw = [
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines)
            ]
            headers = dict(raw)
            length = int(headers.get("content-length", "0"))
            while len(data) < length:
                chunk = await stream.receive_some()
                assert chunk, "closed mid-body"
                data += chunk
            reply = Reply(
                int(status_line.split()[1]), headers, data[:length], data[length:], raw=raw
            )
            if expect_close:
                with trio.fail_after(2):
                    while chunk := await stream.receive_some():
                        reply.rest += chunk
                reply.closed = True
    return reply


def with_echo(settings: Settings, **changes: object) -> AutoBotApp:
    app = create_app(dataclasses.replace(settings, **changes))

    @app.websocket(ECHO)
    async def echo() -> None:
        await websocket.accept()
        await websocket.send(await websocket.receive())

    return app


def error_of(body: bytes | None) -> dict:
    assert body is not None
    parsed = json.loads(body)
    assert set(parsed) == {"error"}
    return parsed["error"]


# --- Content-Length and Transfer-Encoding together -----------------------------


@pytest.mark.parametrize("length", [b"4", b"999999999999"])
async def test_length_and_chunked_together_is_400_and_the_connection_closes(
    settings: Settings, length: bytes
) -> None:
    body = b'{"title": "smuggled?"}'
    request = (
        b"POST /api/chats HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: "
        + length
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    # A second request right behind it: a server that kept the connection would
    # answer it. Several rounds, since losing the answer to it was a race.
    follow_up = b"GET /api/chats HTTP/1.1\r\nHost: localhost\r\n\r\n"
    async with served(create_app(settings)) as client:
        replies = [
            await exchange(client.base_url.port or 0, request + follow_up) for _ in range(10)
        ]
        chats = (await client.get("/api/chats")).json()["chats"]
    for reply in replies:
        assert reply.status == 400
        assert reply.headers["content-type"] == "application/json"
        assert error_of(reply.body)["code"] == "ambiguous_framing"
        assert reply.headers["connection"] == "close"
        assert reply.closed and reply.rest == b""
    assert chats == []


# --- Authentication headers ----------------------------------------------------------


async def test_401_carries_the_bearer_challenge(settings: Settings) -> None:
    async with served(with_echo(settings, api_token=TOKEN)) as client:
        missing = await client.get("/api/deadlines")
        wrong = await client.get("/api/deadlines", headers={"Authorization": "Bearer nope"})
        url = str(client.base_url).replace("http://", "ws://") + ECHO
        with pytest.raises(trio_websocket.ConnectionRejected) as caught:
            async with trio_websocket.open_websocket_url(url):
                pass
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="autobot"'
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="autobot", error="invalid_token"'
    rejected = caught.value
    assert rejected.status_code == 401
    assert (b"www-authenticate", b'Bearer realm="autobot"') in rejected.headers
    assert error_of(rejected.body)["code"] == "unauthorized"


async def test_credentials_sent_twice_are_400(settings: Settings) -> None:
    good = ("Authorization", f"Bearer {TOKEN}")
    async with served(with_echo(settings, api_token=TOKEN)) as client:
        twice = await client.get("/api/deadlines", headers=[good, good])
        mixed = await client.get("/api/deadlines", headers=[good, ("Authorization", "Bearer x")])
        url = str(client.base_url).replace("http://", "ws://") + ECHO + f"?token={TOKEN}"
        with pytest.raises(trio_websocket.ConnectionRejected) as caught:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[(b"Authorization", f"Bearer {TOKEN}".encode())]
            ):
                pass
        once = await client.get("/api/deadlines", headers=[good])
    for response in (twice, mixed):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "duplicate_authorization"
        assert 'error="invalid_request"' in response.headers["www-authenticate"]
    assert caught.value.status_code == 400
    assert error_of(caught.value.body)["code"] == "duplicate_authorization"
    assert once.status_code == 200


# --- What Hypercorn answers itself (documented in docs/api.md) -----------------------

HOST = b"Host: localhost\r\n"


@pytest.mark.parametrize(
    ("parts", "status"),
    [
        pytest.param([b"NOT HTTP AT ALL\r\n\r\n"], 400, id="garbage"),
        pytest.param([b"GET /api/health HTTP/1.1\r\n\r\n"], 400, id="http11-without-host"),
        pytest.param(
            [b"GET /api/health HTTP/1.1\r\n" + HOST + HOST + b"\r\n"], 400, id="two-hosts"
        ),
        pytest.param(
            [
                b"POST /api/chats HTTP/1.1\r\n"
                + HOST
                + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
            ],
            400,
            id="two-lengths",
        ),
        pytest.param(
            [b"POST /api/chats HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"],
            400,
            id="bad-chunk",
        ),
        pytest.param(
            [b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n"], 400, id="non-ascii-target"
        ),
        pytest.param(
            [b"POST /api/chats HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n"],
            501,
            id="unknown-transfer-coding",
        ),
        pytest.param(
            # More than 16 KiB of header block still incomplete in Hypercorn's buffer.
            [b"GET /api/health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 20_000, b"\r\n\r\n"],
            431,
            id="headers-too-large",
        ),
    ],
)
async def test_what_hypercorn_refuses_gets_an_empty_answer_and_a_close(
    settings: Settings, parts: list[bytes], status: int
) -> None:
    # These never reach the app, so they cannot be in the contract's JSON shape.
    # If this test fails after a Hypercorn upgrade, update docs/api.md ("Wire-level errors").
    async with served(create_app(settings)) as client:
        reply = await exchange(client.base_url.port or 0, *parts)
    assert reply.status == status
    assert reply.body == b""
    assert reply.headers["content-length"] == "0"
    assert reply.headers["connection"] == "close"
    assert reply.closed


async def test_invalid_websocket_handshake_is_hypercorns_bare_400(settings: Settings) -> None:
    request = (
        b"GET "
        + ECHO.encode()
        + b" HTTP/1.1\r\n"
        + HOST
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )  # no Sec-WebSocket-Key
    async with served(with_echo(settings)) as client:
        reply = await exchange(client.base_url.port or 0, request, expect_close=False)
    assert (reply.status, reply.body) == (400, b"")


# --- The listen backlog ------------------------------------------------------------------


def _listen_backlog(port: int) -> int:
    # For a listening socket, ss reports the backlog as its Send-Q.
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "LISTEN", out
    return int(out[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
async def test_the_listen_backlog_is_the_setting(tmp_path: pathlib.Path) -> None:
    environ = {
        "AUTOBOT_DATA_DIR": str(tmp_path / "data"),
        "AUTOBOT_LLM_URL": f"http://127.0.0.1:{closed_port()}",
        "AUTOBOT_LISTEN_BACKLOG": "333",
    }
    async with run_server(environ) as server:
        assert _listen_backlog(int(server.url.rsplit(":", 1)[1])) == 333


@pytest.mark.slow
async def test_a_burst_of_connects_needs_no_syn_retry(tmp_path: pathlib.Path) -> None:
    # With Hypercorn's default backlog (100) most of 500 simultaneous connects wait
    # out a 1 s SYN retransmit; with AutoBot's default (1024) none should.
    environ = {
        "AUTOBOT_DATA_DIR": str(tmp_path / "data"),
        "AUTOBOT_LLM_URL": f"http://127.0.0.1:{closed_port()}",
    }
    connect_s: list[float] = []
    async with run_server(environ) as server, trio.open_nursery() as reading:
        # One log line per request: keep reading them, or the server blocks on a full pipe.
        reading.start_soon(server.drain)
        port = int(server.url.rsplit(":", 1)[1])
        go = trio.Event()

        async def connect() -> None:
            await go.wait()
            started = trio.current_time()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            connect_s.append(trio.current_time() - started)
            async with stream:
                await stream.send_all(
                    b"GET /api/none HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                while await stream.receive_some():
                    pass

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(500):
                    nursery.start_soon(connect)
                await trio.sleep(0.1)
                go.set()
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/api/health")).status_code == 200
        reading.cancel_scope.cancel()
    assert len(connect_s) == 500
    assert max(connect_s) < 0.9, sorted(connect_s)[-5:]
