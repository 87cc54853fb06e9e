"""File routes: list, download, upload, mkdir, delete under the files root (being written)."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["files"]

files = Blueprint("files", __name__)
