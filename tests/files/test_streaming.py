"""Uploads and downloads on the wire: cut off, too large, too slow, and far larger than memory.

Requests that no HTTP client sends (a body that stops halfway, headers
without the body they announce) go over raw sockets to a real server.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import resource
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from quart import request

from autobot import Settings
from autobot.api import create_app
from tests.files.memory import peak_rise
from tests.support.polling import eventually
from tests.support.process import run_server
from tests.support.serving import served

MIB = 1 << 20


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_url="http://127.0.0.1:9")


@pytest.fixture
def root(settings: Settings) -> Path:
    root = settings.data_dir / "files"
    root.mkdir(parents=True)
    return root


def port_of(client: httpx.AsyncClient) -> int:
    port = client.base_url.port
    assert port is not None
    return port


async def send_head(port: int, target: str, headers: dict[str, str]) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    lines = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    return stream


async def read_reply(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body), then whatever else comes until the close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some()
        assert chunk, "closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def leftovers(root: Path) -> list[str]:
    return sorted(name for _, _, names in os.walk(root) for name in names)


async def temporary_with_data(root: Path) -> bool:
    return any(
        entry.name.endswith(".tmp") and entry.stat().st_size > 0 for entry in os.scandir(root)
    )


# -- uploads cut off, too slow, too large ----------------------------------------------


async def test_an_upload_cut_off_midway_leaves_nothing(settings: Settings, root: Path) -> None:
    async with served(create_app(settings)) as client:
        stream = await send_head(
            port_of(client), "/api/files/content?path=big.bin", {"Content-Length": str(10 * MIB)}
        )
        with trio.fail_after(10):
            for _ in range(48):  # 3 MiB of 10
                await stream.send_all(b"x" * 65536)
            await eventually(lambda: temporary_with_data(root))  # it was being written
        await stream.aclose()

        async def nothing_left() -> bool:
            return leftovers(root) == []

        with trio.fail_after(10):
            await eventually(nothing_left)
        listing = await client.get("/api/files")
    assert listing.json() == {"entries": []}


async def test_an_upload_that_stalls_past_http_body_idle_is_408_and_leaves_nothing(
    settings: Settings, root: Path
) -> None:
    settings = dataclasses.replace(settings, deadlines={"http.body_idle": 0.5})
    async with served(create_app(settings)) as client:
        stream = await send_head(
            port_of(client), "/api/files/content?path=slow.bin", {"Content-Length": str(4 * MIB)}
        )
        async with stream:
            await stream.send_all(b"y" * (2 * MIB))  # then nothing more
            with trio.fail_after(10):
                status, _, body = await read_reply(stream)
    assert status == 408
    assert b'"scope":"http.body_idle"' in body and b"request_timeout" in body
    assert leftovers(root) == []


async def test_413_arrives_before_the_body_is_sent(settings: Settings, root: Path) -> None:
    async with served(create_app(settings)) as client:
        stream = await send_head(
            port_of(client), "/api/files/content?path=huge.bin", {"Content-Length": str(10**12)}
        )
        async with stream:
            with trio.fail_after(5):
                status, headers, body = await read_reply(stream)
                assert await stream.receive_some() == b""  # and the connection is closed
    assert status == 413
    assert b'"code":"upload_too_large"' in body
    assert headers["connection"] == "close"
    assert leftovers(root) == []


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_a_chunked_body_over_the_limit_is_stopped_at_the_limit(
    settings: Settings, root: Path
) -> None:
    settings = dataclasses.replace(settings, max_upload_bytes=MIB)
    sent = 0
    async with served(create_app(settings)) as client:
        stream = await send_head(
            port_of(client),
            "/api/files/content?path=grows.bin",
            {"Transfer-Encoding": "chunked"},
        )
        async with stream:
            with trio.fail_after(10):
                while sent < MIB:
                    await stream.send_all(chunked(b"z" * 65536))
                    sent += 65536
                await stream.send_all(chunked(b"!"))  # one byte past the limit, then silence
                status, _, body = await read_reply(stream)
                assert await stream.receive_some() == b""
    assert status == 413
    assert b'"code":"upload_too_large"' in body
    assert leftovers(root) == []


async def test_a_chunked_body_of_exactly_the_limit_is_taken(settings: Settings, root: Path) -> None:
    settings = dataclasses.replace(settings, max_upload_bytes=MIB)
    async with served(create_app(settings)) as client:
        stream = await send_head(
            port_of(client), "/api/files/content?path=full.bin", {"Transfer-Encoding": "chunked"}
        )
        async with stream:
            for _ in range(16):
                await stream.send_all(chunked(b"w" * 65536))
            await stream.send_all(b"0\r\n\r\n")
            with trio.fail_after(10):
                status, _, body = await read_reply(stream)
    assert status == 201, body
    assert (root / "full.bin").stat().st_size == MIB


async def test_a_body_sent_a_byte_per_chunk_is_written_whole(
    settings: Settings, root: Path
) -> None:
    data = bytes(range(256)) * 12  # 3,072 one-byte chunks: more than one pwritev takes
    async with served(create_app(settings)) as client:
        stream = await send_head(
            port_of(client), "/api/files/content?path=bytes.bin", {"Transfer-Encoding": "chunked"}
        )
        async with stream:
            await stream.send_all(b"".join(chunked(data[i : i + 1]) for i in range(len(data))))
            await stream.send_all(b"0\r\n\r\n")
            with trio.fail_after(10):
                status, _, body = await read_reply(stream)
    assert status == 201, body
    assert (root / "bytes.bin").read_bytes() == data


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG in this process (SIGXFSZ ignored)."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)


async def test_a_write_that_fails_ends_the_upload_and_leaves_nothing(
    settings: Settings, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(create_app(settings)) as client:
        # Just over the limit: once the server stops reading, what the client still
        # has to send fits in the sockets' buffers, so it goes on to read the answer
        # instead of racing the server's close.
        with file_size_limit(3 * MIB), trio.fail_after(10):
            response = await client.put(
                "/api/files/content",
                params={"path": "full.bin"},
                content=b"f" * (3 * MIB + 256 * 1024),
            )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    # The rest of the body is never read: the connection ends, nobody waits to send it.
    assert response.headers["connection"] == "close"
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1]]
    assert [type(error) for error in logged] == [OSError]  # what failed is what is reported
    assert logged[0].errno == errno.EFBIG
    assert leftovers(root) == []


async def test_other_routes_still_read_bodies_larger_than_the_stream_buffer(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.post("/api/test/length")
    async def length() -> dict[str, Any]:
        return {"length": len(await request.get_data())}

    async with served(app) as client:
        response = await client.post("/api/test/length", content=b"q" * (5 * MIB))
    assert response.json() == {"length": 5 * MIB}


# -- downloads ---------------------------------------------------------------------------


def descriptors_on(path: Path) -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                count += 1
        except OSError:
            pass
    return count


async def test_a_client_that_goes_away_stops_the_download(settings: Settings, root: Path) -> None:
    big = root / "big.bin"
    big.touch()
    os.truncate(big, 256 * MIB)  # sparse: quick to make, as long to send
    async with served(create_app(settings)) as client:
        async with client.stream("GET", "/api/files/content", params={"path": "big.bin"}) as reply:
            assert reply.status_code == 200
            first = await reply.aiter_raw().__anext__()
            assert first
            assert descriptors_on(big.resolve()) == 1  # the server is reading it

        async def closed() -> bool:
            return descriptors_on(big.resolve()) == 0

        with trio.fail_after(5):
            await eventually(closed)


async def test_slow_transfers_are_not_bounded_by_http_request(
    settings: Settings, root: Path
) -> None:
    settings = dataclasses.replace(settings, deadlines={"http.request": 0.2})
    (root / "eight.bin").write_bytes(b"8" * (8 * MIB))

    class Trickle:
        """Four pieces a tenth of a second apart: longer than http.request in all."""

        def __init__(self) -> None:
            self.left = 4

        def __aiter__(self) -> Trickle:
            return self

        async def __anext__(self) -> bytes:
            if not self.left:
                raise StopAsyncIteration
            self.left -= 1
            await trio.sleep(0.1)
            return b"t" * 1000

    async with served(create_app(settings)) as client:
        uploaded = await client.put(
            "/api/files/content", params={"path": "slow.bin"}, content=Trickle()
        )
        received = 0
        params = {"path": "eight.bin"}
        async with client.stream("GET", "/api/files/content", params=params) as reply:
            async for chunk in reply.aiter_raw(MIB):
                received += len(chunk)
                await trio.sleep(0.05)  # a slow reader: 8 pieces take 0.4 s
    assert uploaded.status_code == 201, uploaded.text
    assert (root / "slow.bin").read_bytes() == b"t" * 4000
    assert received == 8 * MIB


# -- far larger than memory, through a real server process --------------------------------

FILE_BYTES = 512 * MIB
MEMORY_LIMIT = 32 * MIB


class Pattern:
    """``size`` bytes of a repeating, position-dependent pattern, as an async iterable."""

    def __init__(self, size: int, block: int = MIB) -> None:
        self._blocks: Iterable[bytes] = (
            index.to_bytes(8, "big") * (block // 8) for index in range(size // block)
        )
        self.digest = hashlib.sha256()

    def __aiter__(self) -> Pattern:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        block = next(iter(self._blocks), None)
        if block is None:
            raise StopAsyncIteration
        self.digest.update(block)
        return block


@pytest.mark.slow
async def test_upload_and_download_far_larger_than_the_memory_limit(tmp_path: Path) -> None:
    environ = {
        "AUTOBOT_DATA_DIR": str(tmp_path / "data"),
        "AUTOBOT_MAX_UPLOAD_BYTES": str(FILE_BYTES),
        "AUTOBOT_LLM_URL": "http://127.0.0.1:9",
    }
    async with (
        run_server(environ) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        pid = server.process.pid
        warm = await client.put("/api/files/content", params={"path": "warm"}, content=b"w" * MIB)
        assert warm.status_code == 201
        pattern = Pattern(FILE_BYTES)

        async def upload() -> httpx.Response:
            return await client.put(
                "/api/files/content", params={"path": "big.bin"}, content=pattern
            )

        uploaded, upload_rise = await peak_rise(pid, upload)
        assert uploaded.json() == {"path": "big.bin", "size": FILE_BYTES}

        async def download() -> str:
            digest = hashlib.sha256()
            params = {"path": "big.bin"}
            async with client.stream("GET", "/api/files/content", params=params) as reply:
                assert reply.headers["content-length"] == str(FILE_BYTES)
                async for chunk in reply.aiter_raw():
                    digest.update(chunk)
            return digest.hexdigest()

        downloaded, download_rise = await peak_rise(pid, download)
    assert downloaded == pattern.digest.hexdigest()
    assert upload_rise < MEMORY_LIMIT, f"upload raised RSS by {upload_rise / MIB:.1f} MiB"
    assert download_rise < MEMORY_LIMIT, f"download raised RSS by {download_rise / MIB:.1f} MiB"
