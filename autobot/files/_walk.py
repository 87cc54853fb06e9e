"""Listing the files under a directory of the files root by glob patterns.

Patterns are matched against the path relative to the walked directory, with
``/`` separators: ``*`` and ``?`` stay within one path segment, ``**/`` spans
any number of directories (none included), so ``**/*.py`` matches ``a.py`` and
``src/pkg/a.py``, and ``docs/*.md`` matches only the top of ``docs``.

Symbolic links are never followed, to files or to directories: a link could
lead out of the files root, or round in a circle.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import trio

from ._io import run_file_io

__all__ = ["DEFAULT_EXCLUDED_DIRS", "compile_patterns", "walk_files"]

#: Directories no walk goes into: version control, caches, environments.
DEFAULT_EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        "node_modules",
        ".venv",
        "venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
    }
)


@lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:[^/]+/)*")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + r"\Z")


def compile_patterns(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test of a relative path against glob ``patterns``; ``ValueError`` for a bad one.

    When every pattern is ``**/*<suffix>`` (``**/*.py``: the usual way to
    choose files by type) the test is one ``str.endswith``; otherwise one
    regular expression of all the patterns. Matching thirty patterns one by
    one costs more than reading a small file.
    """
    patterns = list(patterns)
    for pattern in patterns:
        if not pattern or pattern.startswith("/"):
            raise ValueError(f"{pattern!r} is not a relative glob pattern")
    suffixes = tuple(p[4:] for p in patterns if p.startswith("**/*"))
    if len(suffixes) == len(patterns) and all(s and not set(s) & set("*?/") for s in suffixes):
        return lambda path: path.endswith(suffixes)
    combined = re.compile("|".join(f"(?:{_pattern_regex(p).pattern})" for p in patterns))
    return lambda path: combined.match(path) is not None


def _scan(directory: Path, excluded: frozenset[str]) -> tuple[list[str], list[str]]:
    files, subdirs = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in excluded:
                    subdirs.append(entry.name)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry.name)
    return files, subdirs


async def walk_files(
    root: Path,
    patterns: Sequence[str] = ("**/*",),
    *,
    excluded_dirs: frozenset[str] = DEFAULT_EXCLUDED_DIRS,
) -> list[str]:
    """Relative paths (``/``-separated, sorted) of the regular files matching a pattern.

    One directory is listed per ``file.io`` step; a directory that vanishes
    or cannot be read while the walk goes on is skipped.
    """
    matches = compile_patterns(patterns)
    found: list[str] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            files, subdirs = await run_file_io(_scan, root / relative, excluded_dirs)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        prefix = f"{relative}/" if relative else ""
        for name in files:
            path = prefix + name
            if matches(path):
                found.append(path)
        pending.extend(prefix + name for name in subdirs)
        await trio.lowlevel.checkpoint()
    found.sort()
    return found
