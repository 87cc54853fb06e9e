"""Resolving client paths inside the files root (a first version; see docs/files.md)."""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import BadRequest, NotFound, echo
from ._io import run_file_io

__all__ = ["resolve_client_path"]


def _outside(client_path: str) -> BadRequest:
    return BadRequest(
        f"path {echo(client_path)} is outside the files root", code="path_outside_root"
    )


def _resolve(root: Path, client_path: str, must_exist: bool) -> Path:
    if "\x00" in client_path or "\\" in client_path or client_path.startswith("/"):
        raise _outside(client_path)
    parts = [part for part in client_path.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise _outside(client_path)
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    candidate = root.joinpath(*parts)
    real = Path(os.path.realpath(candidate))
    if real != root and root not in real.parents:
        raise _outside(client_path)
    if must_exist and not os.path.lexists(candidate):
        raise NotFound(f"no file or directory {echo(client_path)}", code="file_not_found")
    return real


async def resolve_client_path(root: Path, client_path: str, *, must_exist: bool = True) -> Path:
    """``client_path`` inside ``root``: 400 ``path_outside_root``, 404 ``file_not_found``."""
    return await run_file_io(_resolve, root, client_path, must_exist)
