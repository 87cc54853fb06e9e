"""The resolver of client paths: every escape refused, every legitimate name kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autobot import BadRequest, NotFound, ValidationFailed
from autobot.files import resolve_client_path
from autobot.files._paths import check_client_path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("s")
    return root


async def outside(root: Path, client_path: str, *, must_exist: bool = True) -> None:
    with pytest.raises(BadRequest) as caught:
        await resolve_client_path(root, client_path, must_exist=must_exist)
    assert caught.value.code == "path_outside_root"


ESCAPES = [
    "..",
    "../outside/secret.txt",
    "docs/../../outside",
    "docs/..",
    "/etc/passwd",
    "//etc",
    "docs\\a.txt",
    "..\\outside",
    "docs/a.txt\x00.png",
    "...",
    ". .",
    " ",
    "docs/ ..",
    "%2e%2e",
    "%2E%2e/outside",
    "..%2f",
    "..%2Foutside",
    "%2e%2e%2f%2e%2e",
    "docs%2f..%2f..",
    "docs%5c..",
    "%00",
    "%252e%252e",  # encoded twice
    "%25252e%25252e",  # three times
    "%%32%65%%32%65",  # the escapes themselves escaped
    "%u002e%u002e",
    "%c0%ae%c0%ae",  # overlong UTF-8 dots
    "．．/outside",  # fullwidth full stops
    "‥/outside",  # two dot leader
    "…",  # horizontal ellipsis
    "%EF%BC%8E%EF%BC%8E",  # fullwidth dots, percent-encoded
    "..／outside",  # fullwidth solidus
    "docs＼..",  # fullwidth reverse solidus
]


@pytest.mark.parametrize("client_path", ESCAPES)
async def test_every_disguise_of_an_escape_is_refused(root: Path, client_path: str) -> None:
    await outside(root, client_path)
    await outside(root, client_path, must_exist=False)


@pytest.mark.parametrize(
    "client_path", ["a%20b", "100%.txt", "foo.", "..foo", "a..b", ".hidden", "%41", "~"]
)
async def test_odd_but_harmless_names_are_names(root: Path, client_path: str) -> None:
    resolved = await resolve_client_path(root, client_path, must_exist=False)
    assert resolved == root.resolve() / client_path


@pytest.mark.parametrize("client_path", ["", ".", "./", "./."])
async def test_empty_and_dot_are_the_root(root: Path, client_path: str) -> None:
    assert await resolve_client_path(root, client_path) == root.resolve()


async def test_a_file_inside_resolves_to_its_absolute_path(root: Path) -> None:
    resolved = await resolve_client_path(root, "docs//./a.txt")
    assert resolved == root.resolve() / "docs" / "a.txt"
    assert resolved.is_absolute()


async def test_missing_path_is_file_not_found_unless_it_may_be_missing(root: Path) -> None:
    with pytest.raises(NotFound) as caught:
        await resolve_client_path(root, "docs/nope.txt")
    assert caught.value.code == "file_not_found"
    with pytest.raises(NotFound):
        await resolve_client_path(root, "docs/a.txt/under-a-file")
    created = await resolve_client_path(root, "docs/new/deeper.txt", must_exist=False)
    assert created == root.resolve() / "docs" / "new" / "deeper.txt"


async def test_the_root_is_created_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "data" / "files"
    assert await resolve_client_path(root, "") == root.resolve()
    assert root.is_dir()


async def test_name_and_path_length_limits(root: Path) -> None:
    assert await resolve_client_path(root, "n" * 255, must_exist=False)
    for too_long in ("n" * 256, "é" * 128, "docs/" + "x" * 300, "a/" * 2049):
        with pytest.raises(ValidationFailed) as caught:
            await resolve_client_path(root, too_long, must_exist=False)
        assert caught.value.code == "path_too_long"
        assert caught.value.status == 422


async def test_resolved_path_over_path_max_is_too_long(tmp_path: Path) -> None:
    deep_root = tmp_path / ("r" * 200) / ("r" * 200)
    client_path = "/".join(["d" * 200] * 19)  # 3,818 bytes, fine alone; too long under the root
    assert len(client_path) <= 4096
    with pytest.raises(ValidationFailed) as caught:
        await resolve_client_path(deep_root, client_path, must_exist=False)
    assert caught.value.code == "path_too_long"


def test_the_spelling_checks_need_no_file_system() -> None:
    assert check_client_path("a/./b//c/") == ["a", "b", "c"]
    assert check_client_path("") == []
    with pytest.raises(BadRequest):
        check_client_path("\ud800")  # a lone surrogate names no file


# -- symbolic links ----------------------------------------------------------------------


async def test_link_inside_the_root_pointing_outside_is_refused(root: Path) -> None:
    os.symlink(root.parent / "outside", root / "out")
    os.symlink("../../outside/secret.txt", root / "docs" / "secret")
    for client_path in ("out", "out/secret.txt", "out/not-there", "docs/secret"):
        await outside(root, client_path)
        await outside(root, client_path, must_exist=False)


async def test_dangling_link_outside_does_not_say_what_exists_there(root: Path) -> None:
    os.symlink("/nonexistent-dir/x", root / "dangling")
    await outside(root, "dangling")
    await outside(root, "dangling/deeper", must_exist=False)


async def test_a_chain_of_links_that_ends_outside_is_refused(root: Path) -> None:
    os.symlink("b", root / "a")
    os.symlink("docs/c", root / "b")
    os.symlink("../../outside", root / "docs" / "c")
    await outside(root, "a")
    await outside(root, "a/secret.txt")


async def test_a_link_loop_is_refused(root: Path) -> None:
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    await outside(root, "loop1/x", must_exist=False)


async def test_links_to_directories_inside_the_root_are_followed(root: Path) -> None:
    real_docs = root.resolve() / "docs"
    os.symlink("docs", root / "relative")
    os.symlink(real_docs, root / "absolute")
    os.symlink("relative", root / "chained")
    os.symlink("../docs/a.txt", root / "docs" / "alias")
    for client_path in ("relative/a.txt", "absolute/a.txt", "chained/a.txt", "docs/alias"):
        assert await resolve_client_path(root, client_path) == real_docs / "a.txt"
    assert await resolve_client_path(root, "chained/new.txt", must_exist=False) == (
        real_docs / "new.txt"
    )


async def test_a_link_may_pass_outside_if_it_lands_inside(root: Path) -> None:
    # ../files/docs leaves the root for one step and comes back: the target is inside.
    os.symlink("../files/docs", root / "round-trip")
    assert await resolve_client_path(root, "round-trip/a.txt") == root.resolve() / "docs/a.txt"


async def test_a_root_reached_through_a_link_is_still_the_root(tmp_path: Path, root: Path) -> None:
    os.symlink(root, tmp_path / "alias-of-root")
    resolved = await resolve_client_path(tmp_path / "alias-of-root", "docs/a.txt")
    assert resolved == root.resolve() / "docs" / "a.txt"
    await outside(tmp_path / "alias-of-root", "..")
