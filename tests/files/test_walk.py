"""Listing files by glob patterns: segment rules, excluded directories, links never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autobot.files import compile_patterns, walk_files


def make(root: Path, *paths: str) -> None:
    for relative in paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["**/*.py"], ["a.py", "src/b.py", "src/pkg/c.py"]),
        (["*.py"], ["a.py"]),
        (["src/*.py"], ["src/b.py"]),
        (["src/**/*.py"], ["src/b.py", "src/pkg/c.py"]),
        (
            ["**/*.md", "**/*.py"],
            ["README.md", "a.py", "docs/x/guide.md", "src/b.py", "src/pkg/c.py"],
        ),
        (["**/?.py"], ["a.py", "src/b.py", "src/pkg/c.py"]),
        (["docs/**"], ["docs/x/guide.md"]),
    ],
)
async def test_patterns_match_relative_paths_by_segment(
    tmp_path: Path, patterns: list[str], expected: list[str]
) -> None:
    make(tmp_path, "a.py", "README.md", "src/b.py", "src/pkg/c.py", "docs/x/guide.md")
    assert await walk_files(tmp_path, patterns) == expected


async def test_caches_and_environments_are_skipped_and_links_never_followed(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    make(outside, "secret.py")
    root = tmp_path / "root"
    make(root, "keep.py", ".git/hook.py", "node_modules/m.py", "__pycache__/c.py", ".venv/v.py")
    os.symlink(outside, root / "linked_dir")
    os.symlink(outside / "secret.py", root / "linked.py")
    assert await walk_files(root, ["**/*.py"]) == ["keep.py"]


def test_a_pattern_must_be_relative_and_not_empty() -> None:
    for bad in ("", "/etc/*"):
        with pytest.raises(ValueError):
            compile_patterns([bad])
    matches = compile_patterns(["src/*.py", "**/*.md"])
    assert matches("src/a.py") and matches("x/y/z.md")
    assert not matches("src/sub/a.py")
