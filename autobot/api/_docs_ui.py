"""The API docs page at ``/api/docs``: the vendored Swagger UI, served by the server itself.

The page, its script and Swagger UI's files live in ``autobot/static/docs``
(see its README for where they come from and their licence) and are read once,
at import, so serving them never touches the disk and needs no other host: the
page renders ``/api/openapi.json`` with no internet access. Its
Content-Security-Policy allows this origin only; Swagger UI sets inline
styles and uses ``data:`` images, so those two are allowed too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from quart import Blueprint, Response, request
from quart_schema import hide
from quart_trio.wrappers import TrioResponse

from .._errors import NotFound

__all__ = ["DOCS_DIR", "DOCS_POLICY", "docs_ui"]

DOCS_DIR = Path(__file__).resolve().parent.parent / "static" / "docs"

DOCS_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(DOCS_DIR.iterdir()) if DOCS_DIR.is_dir() else ():
        if path.is_file() and path.suffix in _TYPES and not path.name.startswith("."):
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[path.name] = (body, _TYPES[path.suffix], etag)
    return files


_FILES = _load()

docs_ui = Blueprint("docs_ui", __name__)


def _answer(name: str) -> Response:
    found = _FILES.get(name)
    if found is None:
        raise NotFound(f"the docs page has no file {name!r}", code="not_found")
    body, content_type, etag = found
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "Content-Security-Policy": DOCS_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return TrioResponse(status=304, headers=headers)
    return TrioResponse(body, content_type=content_type, headers=headers)


@docs_ui.get("/api/docs")
@hide
async def docs_page() -> Response:
    """The API's OpenAPI document, rendered in the browser."""
    return _answer("index.html")


@docs_ui.get("/api/docs/<name>")
@hide
async def docs_file(name: str) -> Response:
    """Swagger UI's script and styles, the page's own, and their licence."""
    return _answer(name)
