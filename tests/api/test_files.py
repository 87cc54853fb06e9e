"""The files routes over a real server: hostile paths on every route, and each route's behaviour."""

from __future__ import annotations

import dataclasses
import email.utils
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from autobot import Settings
from autobot.api import create_app
from autobot.api._files import ByteRange, parse_range
from tests.support.serving import served

Route = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


@pytest.fixture
def root(settings: Settings) -> Path:
    root = settings.data_dir / "files"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha")
    return root


@pytest.fixture
async def client(settings: Settings, root: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served(create_app(settings)) as client:
        yield client


class Pieces:
    """An async iterable of byte strings: httpx sends it as a chunked body."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)

    def __aiter__(self) -> Pieces:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


# -- hostile paths on every route --------------------------------------------------------

SPELLED = [
    "..",
    "../outside/canary.txt",
    "docs/../../outside",
    "docs/..",
    "/etc/passwd",
    "//etc/passwd",
    "docs\\..\\..\\outside",
    "..\\outside",
    "docs/a.txt\x00.png",
    "...",
    ". .",
    "docs/ ..",
    "%2e%2e",
    "%2E%2e/outside",
    "..%2foutside",
    "docs%2f..%2f..",
    "%252e%252e/outside",  # encoded twice
    "%%32%65%%32%65",  # the escapes themselves escaped
    "%u002e%u002e",
    "%c0%ae%c0%ae/outside",  # overlong UTF-8 dots
    "．．/outside",  # fullwidth full stops
    "‥/outside",  # two dot leader
    "..／outside",  # fullwidth solidus
    "docs＼..",  # fullwidth reverse solidus
    "%00",
]
# Each passes through a link the test makes (see make_links) that leads out.
THROUGH_LINKS = [
    "out/canary.txt",
    "out/new/deeper.txt",
    "docs/up/canary.txt",
    "chain/canary.txt",
    "docs/outfile/x",
    "etc/passwd",
    "data/x",
    "loop1/x",
    "dangling/y",
    "procroot/etc/passwd",
]
TOO_LONG = ["n" * 256, "d/" * 2100]
HOSTILE = SPELLED + THROUGH_LINKS + TOO_LONG


def make_links(root: Path, outside: Path) -> None:
    os.symlink(outside, root / "out")
    os.symlink("../../outside", root / "docs" / "up")
    os.symlink("docs/up", root / "chain")
    os.symlink(outside / "canary.txt", root / "docs" / "outfile")
    os.symlink("/etc", root / "etc")
    os.symlink("..", root / "data")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("/nonexistent-dir/x", root / "dangling")
    os.symlink("/proc/self/root", root / "procroot")


def snapshot(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``path``: size, mtime and content (links not followed)."""
    found = {}
    for directory, _, names in os.walk(path):
        for name in names:
            full = Path(directory) / name
            info = full.lstat()
            content = full.read_bytes() if full.is_file() and not full.is_symlink() else b""
            found[str(full.relative_to(path))] = (info.st_size, info.st_mtime_ns, content)
    return found


async def list_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.get("/api/files", params={"path": path})


async def download_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.get("/api/files/content", params={"path": path})


async def upload_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.put("/api/files/content", params={"path": path}, content=b"PWNED")


async def upload_parents_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    params = {"path": path, "parents": "true"}
    return await client.put("/api/files/content", params=params, content=b"PWNED")


async def mkdir_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.post("/api/files/mkdir", json={"path": path})


async def mkdir_parents_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.post("/api/files/mkdir", json={"path": path, "parents": True})


async def delete_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.delete("/api/files", params={"path": path})


async def delete_recursive_route(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.delete("/api/files", params={"path": path, "recursive": "true"})


ROUTES: dict[str, Route] = {
    "GET /api/files": list_route,
    "GET /api/files/content": download_route,
    "PUT /api/files/content": upload_route,
    "PUT /api/files/content?parents=true": upload_parents_route,
    "POST /api/files/mkdir": mkdir_route,
    "POST /api/files/mkdir parents": mkdir_parents_route,
    "DELETE /api/files": delete_route,
    "DELETE /api/files?recursive=true": delete_recursive_route,
}


def test_the_table_is_long_enough() -> None:
    assert len(HOSTILE) >= 30
    assert len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize("route", list(ROUTES))
async def test_every_hostile_path_is_refused_and_the_outside_is_untouched(
    settings: Settings, root: Path, tmp_path: Path, route: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("CANARY")
    make_links(root, outside)
    before_outside = snapshot(outside)
    passwd = os.stat("/etc/passwd")
    links = sorted(os.listdir(root))
    wrong = []
    async with served(create_app(settings)) as client:
        before_data = {name for name in os.listdir(settings.data_dir)}
        for path in HOSTILE:
            response = await ROUTES[route](client, path)
            expected = (422, "path_too_long") if path in TOO_LONG else (400, "path_outside_root")
            body = response.json() if response.content else {}
            got = (response.status_code, body.get("error", {}).get("code"))
            if got != expected:
                wrong.append((path, got))
        assert {name for name in os.listdir(settings.data_dir)} == before_data
    assert wrong == []
    assert snapshot(outside) == before_outside
    assert sorted(os.listdir(root)) == links  # no link was removed or replaced
    assert os.stat("/etc/passwd").st_mtime_ns == passwd.st_mtime_ns


async def test_a_link_out_as_the_last_component(
    settings: Settings, root: Path, tmp_path: Path
) -> None:
    """Reading follows the last component (refused); writing acts on the link itself."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("CANARY")
    os.symlink(outside, root / "out-dir")
    os.symlink(outside / "canary.txt", root / "out-file")
    before = snapshot(outside)
    async with served(create_app(settings)) as client:
        for path in ("out-dir", "out-file"):
            error_of(await list_route(client, path), 400, "path_outside_root")
            error_of(await download_route(client, path), 400, "path_outside_root")
            error_of(await mkdir_route(client, path), 409, "already_exists")
        replaced = await upload_route(client, "out-file")
        assert replaced.status_code == 201
        assert (await delete_route(client, "out-dir")).status_code == 204
    assert (root / "out-file").read_bytes() == b"PWNED"  # a file in the root now, not a link
    assert not (root / "out-file").is_symlink()
    assert sorted(os.listdir(root)) == ["docs", "out-file"]
    assert snapshot(outside) == before


# -- listing ----------------------------------------------------------------------------------


async def test_listing_entries_sorted_with_types_sizes_and_utc_times(
    client: httpx.AsyncClient, root: Path
) -> None:
    (root / "docs" / "b.bin").write_bytes(b"\x00" * 300)
    os.symlink("a.txt", root / "docs" / "link-to-a")
    response = await client.get("/api/files", params={"path": "docs"})
    assert response.status_code == 200
    entries = response.json()["entries"]
    assert [(e["name"], e["type"], e["size"]) for e in entries] == [
        ("a.txt", "file", 5),
        ("b.bin", "file", 300),
        ("link-to-a", "file", 5),
        ("sub", "dir", 0),
    ]
    for entry in entries:
        assert set(entry) == {"name", "type", "size", "modified"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["modified"])
        moment = datetime.fromisoformat(entry["modified"]).timestamp()
        assert abs(moment - (root / "docs" / entry["name"]).stat().st_mtime) < 0.002
    root_listing = await client.get("/api/files")
    assert [e["name"] for e in root_listing.json()["entries"]] == ["docs"]


async def test_listing_errors(client: httpx.AsyncClient, root: Path) -> None:
    error_of(await client.get("/api/files", params={"path": "nope"}), 404, "file_not_found")
    error_of(await client.get("/api/files", params={"path": "docs/a.txt"}), 409, "not_a_directory")
    bad = await client.get("/api/files", params={"path": "docs", "limit": "5"})
    error = error_of(bad, 422, "validation_error")
    assert error["fields"][0]["field"] == "limit"


async def test_a_directory_over_ten_thousand_entries_is_422_naming_the_limit(
    client: httpx.AsyncClient, root: Path
) -> None:
    crowded = root / "crowded"
    crowded.mkdir()
    directory = os.open(crowded, os.O_RDONLY)
    try:
        for index in range(10_001):  # directories: the quickest entries to make
            os.mkdir(f"f{index:05d}", dir_fd=directory)
    finally:
        os.close(directory)
    error = error_of(await list_route(client, "crowded"), 422, "too_many_entries")
    assert error["limit"] == 10_000
    assert "10000" in error["message"]
    assert error["fields"] == [{"field": "path", "message": "more than 10000 entries"}]
    os.rmdir(crowded / "f00000")
    assert len((await list_route(client, "crowded")).json()["entries"]) == 10_000


# -- mkdir and delete -------------------------------------------------------------------------


async def test_mkdir(client: httpx.AsyncClient, root: Path) -> None:
    made = await client.post("/api/files/mkdir", json={"path": "docs//new/"})
    assert made.status_code == 201
    assert made.json() == {"path": "docs/new"}
    assert (root / "docs" / "new").is_dir()
    error_of(await mkdir_route(client, "docs/new"), 409, "already_exists")
    error_of(await mkdir_route(client, "docs/a.txt"), 409, "already_exists")
    error_of(await mkdir_route(client, "x/y"), 404, "file_not_found")
    assert (await mkdir_parents_route(client, "x/y/z")).status_code == 201
    assert (root / "x" / "y" / "z").is_dir()
    error_of(await mkdir_route(client, ""), 409, "already_exists")


@pytest.mark.parametrize(
    "body",
    [
        {"path": "a", "parents": "true"},
        {"path": "a", "parents": 1},
        {"path": 5},
        {"path": ["a"]},
        {},
        {"path": "a", "mode": 511},
    ],
)
async def test_mkdir_bodies_are_validated_strictly(
    client: httpx.AsyncClient, root: Path, body: dict[str, Any]
) -> None:
    error = error_of(await client.post("/api/files/mkdir", json=body), 422, "validation_error")
    assert error["fields"]
    assert not (root / "a").exists()


async def test_mkdir_wants_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/files/mkdir", content=b'{"path":"a"}')
    error_of(response, 415, "unsupported_media_type")


async def test_delete(client: httpx.AsyncClient, root: Path) -> None:
    (root / "docs" / "sub" / "b.txt").write_text("b")
    assert (await delete_route(client, "docs/a.txt")).status_code == 204
    assert not (root / "docs" / "a.txt").exists()
    error_of(await delete_route(client, "docs/a.txt"), 404, "file_not_found")
    error_of(await delete_route(client, "docs"), 409, "directory_not_empty")
    assert (root / "docs" / "sub" / "b.txt").exists()
    deleted = await delete_recursive_route(client, "docs")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert os.listdir(root) == []
    for path in ("", ".", "./"):
        error_of(await delete_recursive_route(client, path), 400, "cannot_delete_root")
    assert root.is_dir()


@pytest.mark.parametrize(
    "query",
    [
        {"path": "docs", "recursive": "1"},
        {"path": "docs", "recursive": "True"},
        {"path": "docs", "recursive": "yes"},
        {"path": "docs", "recursive": ""},
        {"recursive": "true"},
        {"path": "docs", "force": "true"},
    ],
)
async def test_delete_queries_are_validated_strictly(
    client: httpx.AsyncClient, root: Path, query: dict[str, str]
) -> None:
    error = error_of(await client.delete("/api/files", params=query), 422, "validation_error")
    assert error["fields"]
    assert (root / "docs" / "a.txt").exists()


async def test_a_repeated_path_parameter_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/files/content?path=docs/a.txt&path=docs/a.txt")
    error_of(response, 422, "validation_error")


# -- upload ---------------------------------------------------------------------------------


async def test_upload_creates_replaces_and_answers_path_and_size(
    client: httpx.AsyncClient, root: Path
) -> None:
    created = await client.put(
        "/api/files/content", params={"path": "docs//new.bin"}, content=b"\x00\x01" * 1000
    )
    assert created.status_code == 201
    assert created.json() == {"path": "docs/new.bin", "size": 2000}
    assert (root / "docs" / "new.bin").read_bytes() == b"\x00\x01" * 1000
    replaced = await client.put("/api/files/content", params={"path": "docs/a.txt"}, content=b"")
    assert replaced.json() == {"path": "docs/a.txt", "size": 0}
    assert (root / "docs" / "a.txt").read_bytes() == b""
    assert sorted(os.listdir(root / "docs")) == ["a.txt", "new.bin", "sub"]  # no temporary left


async def test_upload_of_a_chunked_body_larger_than_the_write_chunk(
    client: httpx.AsyncClient, root: Path
) -> None:
    pieces = Pieces(bytes([index]) * 100_000 for index in range(40))
    response = await client.put("/api/files/content", params={"path": "big"}, content=pieces)
    assert response.json() == {"path": "big", "size": 4_000_000}
    assert (root / "big").read_bytes() == b"".join(bytes([i]) * 100_000 for i in range(40))


async def test_upload_needs_the_parent_unless_parents(
    client: httpx.AsyncClient, root: Path
) -> None:
    error_of(await upload_route(client, "new/dir/f.txt"), 404, "file_not_found")
    assert not (root / "new").exists()
    assert (await upload_parents_route(client, "new/dir/f.txt")).status_code == 201
    assert (root / "new" / "dir" / "f.txt").read_bytes() == b"PWNED"
    error_of(await upload_parents_route(client, "docs/a.txt/f"), 409, "not_a_directory")


async def test_upload_over_a_directory_is_409(client: httpx.AsyncClient, root: Path) -> None:
    for path in ("docs", "docs/sub", ""):
        error_of(await upload_route(client, path), 409, "is_a_directory")
    assert sorted(os.listdir(root / "docs")) == ["a.txt", "sub"]


@pytest.mark.parametrize(
    "query",
    [{}, {"path": "f", "parents": "1"}, {"path": "f", "parents": "TRUE"}, {"path": "f", "x": "y"}],
)
async def test_upload_queries_are_validated_strictly(
    client: httpx.AsyncClient, root: Path, query: dict[str, str]
) -> None:
    response = await client.put("/api/files/content", params=query, content=b"data")
    error_of(response, 422, "validation_error")
    assert not (root / "f").exists()


async def test_upload_over_the_limit_is_413_upload_too_large(
    settings: Settings, root: Path
) -> None:
    settings = dataclasses.replace(settings, max_upload_bytes=1000)
    async with served(create_app(settings)) as client:
        at_limit = await client.put("/api/files/content", params={"path": "f"}, content=b"x" * 1000)
        assert at_limit.status_code == 201
        over = await client.put("/api/files/content", params={"path": "g"}, content=b"x" * 1001)
    error = error_of(over, 413, "upload_too_large")
    assert error["limit"] == 1000
    assert over.headers["connection"] == "close"
    assert sorted(os.listdir(root)) == ["docs", "f"]


async def test_other_routes_keep_their_own_413(settings: Settings) -> None:
    settings = dataclasses.replace(settings, max_upload_bytes=100)
    async with served(create_app(settings)) as client:
        response = await client.post("/api/files/mkdir", json={"path": "x" * 500})
    error_of(response, 413, "payload_too_large")


# -- download -------------------------------------------------------------------------------

CONTENT = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def data_file(root: Path) -> Path:
    path = root / "docs" / "data.bin"
    path.write_bytes(CONTENT)
    return path


async def get(client: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    return await client.get("/api/files/content", params={"path": path}, headers=headers)


async def test_download_headers(client: httpx.AsyncClient, data_file: Path) -> None:
    response = await get(client, "docs/data.bin")
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')
    modified = email.utils.parsedate_to_datetime(response.headers["last-modified"])
    assert int(modified.timestamp()) == int(data_file.stat().st_mtime)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.txt", "text/plain"), ("page.html", "text/html"), ("x.json", "application/json"),
     ("pic.PNG", "image/png"), ("noext", "application/octet-stream")],
)  # fmt: skip
async def test_content_type_from_the_name(
    client: httpx.AsyncClient, root: Path, name: str, content_type: str
) -> None:
    (root / name).write_bytes(b"x")
    assert (await get(client, name)).headers["content-type"] == content_type


async def test_download_errors(client: httpx.AsyncClient, root: Path) -> None:
    error_of(await get(client, "docs/missing"), 404, "file_not_found")
    error_of(await get(client, "docs"), 409, "is_a_directory")
    error_of(await client.get("/api/files/content"), 422, "validation_error")


async def test_head_sends_the_headers_only(client: httpx.AsyncClient, data_file: Path) -> None:
    response = await client.head("/api/files/content", params={"path": "docs/data.bin"})
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.content == b""
    assert (await get(client, "docs/data.bin")).content == CONTENT  # the connection still works


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),  # the first bytes
        ("bytes=1000-1999", 1000, 2000),  # a middle range
        ("bytes=-100", 10_140, 10_240),  # a suffix
        ("bytes=10000-", 10_000, 10_240),  # open-ended
        ("bytes=10239-10239", 10_239, 10_240),  # the last byte
        ("bytes=5-99999", 5, 10_240),  # an end past the file is cut to it
        ("bytes=-99999", 0, 10_240),  # a suffix longer than the file is all of it
    ],
)
async def test_a_range_is_206_with_its_content_range(
    client: httpx.AsyncClient, data_file: Path, header: str, start: int, end: int
) -> None:
    response = await get(client, "docs/data.bin", Range=header)
    assert response.status_code == 206
    assert response.content == CONTENT[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(CONTENT)}"
    assert response.headers["content-length"] == str(end - start)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10240-",  # starts at the end
        "bytes=20000-30000",
        "bytes=-0",
        "bytes=9-5",  # reversed
        "bytes=0-1,5-9",  # several ranges
        "items=0-9",
        "bytes=abc",
        "bytes=-",
        "bytes 0-9",
    ],
)
async def test_an_unsatisfiable_range_is_416(
    client: httpx.AsyncClient, data_file: Path, header: str
) -> None:
    response = await get(client, "docs/data.bin", Range=header)
    error_of(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


async def test_any_range_of_an_empty_file_is_416(client: httpx.AsyncClient, root: Path) -> None:
    (root / "empty").write_bytes(b"")
    assert (await get(client, "empty")).content == b""
    error_of(await get(client, "empty", Range="bytes=0-"), 416, "range_not_satisfiable")


def test_parse_range_needs_no_server() -> None:
    assert parse_range("bytes=0-0", 1) == ByteRange(0, 1)
    assert parse_range(" bytes = 2 - 3 ", 10) == ByteRange(2, 4)
    assert parse_range("bytes=-5", 3) == ByteRange(0, 3)
    assert parse_range("bytes=3-", 3) is None
    assert parse_range("bytes=" + "9" * 19 + "-", 10) is None
    assert ByteRange(2, 4).content_range(10) == "bytes 2-3/10"


async def test_if_none_match_is_304_until_the_file_changes(
    client: httpx.AsyncClient, data_file: Path
) -> None:
    first = await get(client, "docs/data.bin")
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        unchanged = await get(client, "docs/data.bin", **{"If-None-Match": header})
        assert unchanged.status_code == 304, header
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
    assert (await get(client, "docs/data.bin", **{"If-None-Match": '"other"'})).status_code == 200
    uploaded = await client.put(
        "/api/files/content", params={"path": "docs/data.bin"}, content=b"new"
    )
    assert uploaded.status_code == 201
    changed = await get(client, "docs/data.bin", **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.content == b"new"
    assert changed.headers["etag"] != etag


async def test_if_modified_since(client: httpx.AsyncClient, data_file: Path) -> None:
    mtime = data_file.stat().st_mtime
    later = email.utils.formatdate(mtime + 60, usegmt=True)
    earlier = email.utils.formatdate(mtime - 60, usegmt=True)
    assert (await get(client, "docs/data.bin", **{"If-Modified-Since": later})).status_code == 304
    assert (await get(client, "docs/data.bin", **{"If-Modified-Since": earlier})).status_code == 200
    assert (await get(client, "docs/data.bin", **{"If-Modified-Since": "junk"})).status_code == 200


async def test_if_range_resumes_only_the_same_version(
    client: httpx.AsyncClient, data_file: Path
) -> None:
    etag = (await get(client, "docs/data.bin")).headers["etag"]
    same = await get(client, "docs/data.bin", Range="bytes=10-19", **{"If-Range": etag})
    assert same.status_code == 206
    assert same.content == CONTENT[10:20]
    other = await get(client, "docs/data.bin", Range="bytes=10-19", **{"If-Range": '"old"'})
    assert other.status_code == 200
    assert other.content == CONTENT
