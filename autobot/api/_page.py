"""The web page: ``GET /`` and its assets, served from the package with strict headers.

The page is plain HTML, CSS and JavaScript in ``autobot/static`` (no build
step, nothing from another host). The files are read once, when this module
is imported, so serving them never touches the disk; each answer carries an ETag
(a hash of the file) and ``Cache-Control: no-cache``, so a browser asks again
on every load and gets ``304`` until the package changes.

Every answer carries a Content-Security-Policy that allows scripts, styles,
images and connections from this origin only and no inline script at all:
even if an answer's text reached the DOM as markup (the page renders
Markdown by building elements, never by parsing HTML), a ``<script>`` or an
``onerror=`` attribute in it could not run.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from quart import Blueprint, Response, request
from quart_trio.wrappers import TrioResponse

from .._errors import NotFound

__all__ = ["SECURITY_HEADERS", "page"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "font-src 'self'",
            # 'self' covers ws:// and wss:// on this host in current browsers.
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, held in memory."""

    body: bytes
    content_type: str
    etag: str


def _load(directory: Path) -> dict[str, Asset]:
    """The regular files directly in ``directory``, by name.

    Subfolders are not the page's (``static/docs`` holds the API docs UI,
    served by its own route).
    """
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        suffix = path.suffix.lower()
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path.name] = Asset(body, content_type or "application/octet-stream", etag)
    return assets


_ASSETS = _load(STATIC_DIR) if STATIC_DIR.is_dir() else {}

page = Blueprint("page", __name__)


def _answer(name: str) -> Response:
    asset = _ASSETS.get(name)
    if asset is None:
        raise NotFound(f"the page has no file {name!r}", code="not_found")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return TrioResponse(status=304, headers=headers)
    return TrioResponse(asset.body, content_type=asset.content_type, headers=headers)


@page.get("/")
async def index() -> Response:
    """The chat page (see ``docs/web.md``)."""
    return _answer("index.html")


@page.get("/assets/<name>")
async def asset(name: str) -> Response:
    """A script, style sheet or image of the page; anything else is 404."""
    return _answer(name)
