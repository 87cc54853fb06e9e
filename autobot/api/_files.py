"""File routes: list, download, upload, mkdir, delete under the files root.

Every route goes through :class:`autobot.files.FilesRoot`, which walks the
client path beneath the root by directory descriptors and acts through them;
nothing here joins path strings. Both directions stream:

* a **download** is a response body that reads :data:`READ_CHUNK` bytes per
  ``file.io`` step and hands each to Quart to send before reading the next,
  after the handler has returned (so ``http.request`` does not bound it); a client that goes away
  cancels the sending task, and the reading stops with it. ``Range`` (one
  range), ``ETag``/``If-None-Match``, ``Last-Modified``/``If-Modified-Since``
  and ``If-Range`` are honoured.
* an **upload** is read from the request body as it arrives (the route is
  :func:`~autobot.api._request.streamed_body`), gathered into writes of
  :data:`WRITE_CHUNK` bytes to a temporary file beside the target, and
  published (fsync, rename) only once the whole body is in. A
  ``Content-Length`` over the limit is refused before any of the body is
  read; a chunked body is stopped the moment it passes the limit.
"""

from __future__ import annotations

import mimetypes
import re
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, Literal, cast

import trio
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr
from quart import Blueprint, Response, after_this_request, request
from quart.wrappers.response import ResponseBody
from quart_schema import document_response, validate_querystring, validate_request
from quart_trio.wrappers import TrioResponse
from werkzeug.exceptions import RequestEntityTooLarge

from .._deadlines import deadline
from .._errors import (
    DeadlineExceeded,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RequestTimeout,
    echo,
)
from .._nursery import background_nursery
from ..files import Entry, FileReader, FilesRoot, FileWriter, check_client_path
from ._context import services
from ._openapi import errors, openapi_extra
from ._query import QueryBool
from ._request import AutoBotRequest, streamed_body

__all__ = ["READ_CHUNK", "WRITE_CHUNK", "ByteRange", "files", "parse_range"]

#: Bytes read per ``file.io`` step of a download (and per write to the socket).
READ_CHUNK = 512 << 10
#: Bytes of an upload gathered before one ``file.io`` write step.
WRITE_CHUNK = 1 << 20
# Pieces gathered at most before a write: a body sent a byte per chunk would
# otherwise hold a Python object per byte until a write's worth had come.
_MAX_PIECES = 1024

files = Blueprint("files", __name__)

# Read the system's type tables now, at import, not in the first request.
_MIME_TYPES = mimetypes.MimeTypes()
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


# -- request models ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListQuery(_Strict):
    path: str = ""


class PathQuery(_Strict):
    path: str


class UploadQuery(_Strict):
    path: str
    parents: QueryBool = False


class DeleteQuery(_Strict):
    path: str
    recursive: QueryBool = False


class MakeDirectory(_Strict):
    path: StrictStr
    parents: StrictBool = False


class FileEntry(BaseModel):
    name: str
    type: Literal["file", "dir"]
    size: int
    modified: str


class Listing(BaseModel):
    entries: list[FileEntry]


class MadeDirectory(BaseModel):
    path: str


class Written(BaseModel):
    path: str
    size: int


_BYTES = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
_DOWNLOAD = {
    "responses": {
        "200": {
            "description": "the file's bytes, streamed (Content-Type by its name)",
            "content": _BYTES,
        },
        "206": {"description": "the byte range asked for with Range", "content": _BYTES},
        "304": {"description": "the client's copy (If-None-Match, If-Modified-Since) is current"},
    }
}
_UPLOAD = {
    "requestBody": {
        "required": True,
        "description": "the file's new content, raw (any Content-Type)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _root() -> FilesRoot:
    return FilesRoot(services().settings.data_dir / "files")


def _normal(client_path: str) -> str:
    return "/".join(check_client_path(client_path))


def _iso(modified_ns: int) -> str:
    moment = datetime.fromtimestamp(modified_ns // 1_000_000 / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(entry: Entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "type": entry.type,
        "size": entry.size,
        "modified": _iso(entry.modified_ns),
    }


# -- listing, mkdir, delete ----------------------------------------------------------------


@files.get("/api/files")
@validate_querystring(ListQuery)
@document_response(Listing)
@errors(404, 409)
async def list_files(query_args: ListQuery) -> dict[str, Any]:
    """A directory's entries, sorted by name (at most 10,000: else 422 ``too_many_entries``)."""
    entries = await _root().list(query_args.path)
    return {"entries": [_entry(entry) for entry in entries]}


@files.post("/api/files/mkdir")
@validate_request(MakeDirectory)
@document_response(MadeDirectory, 201)
@errors(404, 409)
async def make_directory(data: MakeDirectory) -> tuple[dict[str, Any], int]:
    await _root().mkdir(data.path, parents=data.parents)
    return {"path": _normal(data.path)}, 201


@files.delete("/api/files")
@validate_querystring(DeleteQuery)
@openapi_extra({"responses": {"204": {"description": "deleted"}}})
@errors(404, 409)
async def delete_file(query_args: DeleteQuery) -> tuple[str, int]:
    await _root().delete(query_args.path, recursive=query_args.recursive)
    return "", 204


# -- download ------------------------------------------------------------------------------


class ByteRange:
    """A satisfiable byte range of a representation: ``start`` included, ``end`` excluded."""

    __slots__ = ("end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteRange) and (self.start, self.end) == (other.start, other.end)

    def __repr__(self) -> str:
        return f"ByteRange({self.start}, {self.end})"


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range ``header`` asks for in a file of ``size`` bytes; ``None``: unsatisfiable.

    Accepts ``bytes=first-last``, ``bytes=first-`` and ``bytes=-suffix``.
    Anything else (another unit, several ranges, a malformed or reversed
    range, a start at or past the end, any range of an empty file) is ``None``,
    which answers 416.
    """
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            return None
        return ByteRange(max(0, size - int(last)), size)
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or (last and int(last) < start):
        return None
    return ByteRange(start, end)


def _etag_listed(header: str, etag: str) -> bool:
    """``If-None-Match``'s weak comparison: is ``etag`` (or ``*``) in the list?"""
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _http_date(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _not_modified(reader: FileReader, etag: str) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        return _etag_listed(if_none_match, etag)
    since = _http_date(request.headers.get("If-Modified-Since"))
    return since is not None and reader.modified_ns // 1_000_000_000 <= since


def _range_applies(reader: FileReader, etag: str) -> bool:
    """``If-Range``: the range holds only for the version the client has (strong comparison)."""
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if if_range.strip().startswith(('"', "W/")):
        return if_range.strip() == etag
    date = _http_date(if_range)
    return date is not None and date == reader.modified_ns // 1_000_000_000


class FileBody(ResponseBody):
    """A response body read from an open file, :data:`READ_CHUNK` bytes per ``file.io`` step.

    Quart enters it in the task that sends the response and iterates it; each
    step reads the next chunk while nothing else is held in memory. Leaving
    it (the end, the client gone, the server stopping) closes the file.
    """

    def __init__(self, reader: FileReader, start: int, end: int) -> None:
        self._reader = reader
        self._offset = start
        self._end = end

    async def __aenter__(self) -> FileBody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._reader.aclose()  # noqa: ASYNC102 - shielded and bounded by file.io inside

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes:
        if self._offset >= self._end:
            raise StopAsyncIteration
        data = await self._reader.read(self._offset, min(READ_CHUNK, self._end - self._offset))
        if not data:  # cut short under us: the length sent can no longer be kept
            raise OSError(f"the file ended at {self._offset} bytes of {self._end} promised")
        self._offset += len(data)
        return data

    async def convert_to_sequence(self) -> bytes:
        async with self as body:
            return b"".join([chunk async for chunk in body])


def _content_type(client_path: str) -> str:
    guessed, _ = _MIME_TYPES.guess_type(client_path.rsplit("/", 1)[-1], strict=False)
    return guessed or "application/octet-stream"


def _content_response(reader: FileReader, client_path: str) -> Response:
    etag = f'"{reader.version}"'
    headers = {
        "ETag": etag,
        "Last-Modified": formatdate(reader.modified_ns / 1e9, usegmt=True),
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-cache",
        # Whatever a client uploaded, a browser must not run it as this site's page.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    if _not_modified(reader, etag):
        unchanged = TrioResponse(None, 304, headers=headers)
        del unchanged.headers["Content-Type"]
        return unchanged
    status, start, end = 200, 0, reader.size
    range_header = request.headers.get("Range")
    if range_header is not None and _range_applies(reader, etag):
        wanted = parse_range(range_header, reader.size)
        if wanted is None:
            refused = RangeNotSatisfiable(
                f"the range {echo(range_header)} is not one satisfiable byte range"
                f" of this file ({reader.size} bytes)",
                size=reader.size,
            )
            refused.headers = {"Content-Range": f"bytes */{reader.size}"}  # type: ignore[attr-defined]
            raise refused
        status, start, end = 206, wanted.start, wanted.end
        headers["Content-Range"] = wanted.content_range(reader.size)
    headers["Content-Length"] = str(end - start)
    body = FileBody(reader, start, end if request.method != "HEAD" else start)
    return TrioResponse(body, status, headers=headers, content_type=_content_type(client_path))


@files.get("/api/files/content")
@validate_querystring(PathQuery)
@openapi_extra(_DOWNLOAD)
@errors(404, 409, 416)
async def download_file(query_args: PathQuery) -> Response:
    """The file's bytes, streamed (206 for a ``Range``, 304 when the client's copy is current)."""
    reader = await _root().open(query_args.path)
    try:
        response = _content_response(reader, query_args.path)
    except BaseException:
        await reader.aclose()
        raise
    if not isinstance(response.response, FileBody):
        await reader.aclose()
    return response


# -- upload --------------------------------------------------------------------------------


def _too_large(limit: int) -> PayloadTooLarge:
    error = PayloadTooLarge(
        f"the upload is larger than the limit of {limit} bytes (AUTOBOT_MAX_UPLOAD_BYTES)",
        code="upload_too_large",
        limit=limit,
    )
    # The rest of the body is never read: the connection cannot carry another request.
    error.headers = {"Connection": "close"}  # type: ignore[attr-defined]
    return error


async def _read_pieces(
    incoming: AutoBotRequest, limit: int, send: trio.MemorySendChannel[list[bytes]]
) -> None:
    """Hand the body on in writes of :data:`WRITE_CHUNK`, counting it against ``limit``."""
    received = 0
    pending: list[bytes] = []
    pending_bytes = 0
    try:
        while True:
            # Woken once a write's worth has come, or as soon as the limit is passed;
            # a client may take as long as it likes over the whole, not over one silence.
            with deadline("http.body_idle"):
                pieces = await incoming.receive_pieces(
                    min(WRITE_CHUNK - pending_bytes, limit - received + 1)
                )
            if not pieces:
                break
            size = sum(len(piece) for piece in pieces)
            received += size
            if received > limit:
                raise _too_large(limit)
            pending += pieces
            pending_bytes += size
            if pending_bytes >= WRITE_CHUNK or len(pending) >= _MAX_PIECES:
                await send.send(pending)
                pending, pending_bytes = [], 0
        if pending:
            await send.send(pending)
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    except DeadlineExceeded as error:
        if error.scope != "http.body_idle":
            raise
        raise RequestTimeout(error.scope, error.deadline_s) from None


async def _receive_into(writer: FileWriter, incoming: AutoBotRequest) -> None:
    """Read the body into ``writer``, one write running while the next one arrives.

    The channel holds nothing: the reader hands a write over only when the
    writer has finished the previous one, so at most two writes' worth (and
    the request's own buffer) are in memory. A failed write stops the reading
    and is raised as itself; a failed read (413, 408) stops the writer.
    """
    send, receive = trio.open_memory_channel[list[bytes]](0)
    failed: list[Exception] = []
    drained = trio.Event()

    async def write_behind(reading: trio.CancelScope) -> None:
        try:
            async for pieces in receive:
                await writer.write(pieces)
        except Exception as error:
            failed.append(error)
            reading.cancel()  # before the channel closes: the reader sees a cancel
        finally:
            receive.close()
            drained.set()

    limit = services().settings.max_upload_bytes
    async with background_nursery() as nursery:
        with trio.CancelScope() as reading:
            nursery.start_soon(write_behind, reading)
            try:
                async with send:
                    await _read_pieces(incoming, limit, send)
            except trio.BrokenResourceError:
                if not failed:
                    raise
            await drained.wait()
    if failed:
        raise failed[0]


@files.put("/api/files/content")
@streamed_body
@validate_querystring(UploadQuery)
@document_response(Written, 201)
@openapi_extra(_UPLOAD)
@errors(404, 408, 409, 413)
async def upload_file(query_args: UploadQuery) -> tuple[dict[str, Any], int]:
    """The raw body as the file's new content: whole, or not at all.

    201 ``{"path", "size"}``. A missing directory on the way is 404
    ``file_not_found`` unless ``parents=true``; over the limit, 413
    ``upload_too_large`` (before any of the body is read when the
    ``Content-Length`` says so).
    """
    incoming = cast(AutoBotRequest, request._get_current_object())  # type: ignore[attr-defined]
    limit = services().settings.max_upload_bytes
    if incoming.content_length is not None and incoming.content_length > limit:
        raise _too_large(limit)
    received = False

    @after_this_request
    async def close_unless_received(response: Response) -> Response:
        # An answer sent before the body was read whole (a failed write, a missing
        # directory) ends the connection: the rest of the body is never read, and
        # the client must not wait to send it.
        if not received:
            response.headers["Connection"] = "close"
        return response

    async with await _root().create(query_args.path, parents=query_args.parents) as writer:
        await _receive_into(writer, incoming)
        received = True
        size = await writer.publish()
    return {"path": _normal(query_args.path), "size": size}, 201
