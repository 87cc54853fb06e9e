"""A directory swapped for a link to the outside between the walk and the open never leads out.

Two ways: driving the layer's two steps by hand (walk to the parent, swap,
then act on what the walk holds), and a thread that swaps a directory and a
link back and forth while the same operations run in a loop. The loop is
shown to have teeth: the check-then-open of path strings it replaces is
caught leaking within the same loop.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autobot import AutoBotError, BadRequest, NotFound
from autobot.files._beneath import walk
from autobot.files._paths import check_client_path
from autobot.files._root import _create, _open, _publish, _read, create_in, delete_in, mkdir_in


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "files"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "sub" / "b.txt").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_text("CANARY")
    return root, outside


def swap_for_link(directory: Path, target: Path) -> Path:
    moved = directory.with_name(directory.name + "-moved")
    os.rename(directory, moved)
    os.symlink(target, directory)
    return moved


def place_of(root: Path, client_path: str, **options: object):  # type: ignore[no-untyped-def]
    return walk(root, check_client_path(client_path), client_path, **options)  # type: ignore[arg-type]


# -- the two steps, driven by hand -------------------------------------------------------


async def test_a_file_created_after_the_swap_lands_in_the_directory_walked(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    place = place_of(root, "docs/sub/new.txt", last="stop")
    moved = swap_for_link(root / "docs" / "sub", outside)
    async with create_in(place, "docs/sub/new.txt") as writer:
        await writer.write(b"written")
        await writer.publish()
    assert (moved / "new.txt").read_bytes() == b"written"
    assert sorted(os.listdir(outside)) == ["b.txt"]


def test_mkdir_and_delete_after_the_swap_act_inside(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    making = place_of(root, "docs/sub/made", last="stop")
    deleting = place_of(root, "docs/sub/b.txt", last="stop")
    moved = swap_for_link(root / "docs" / "sub", outside)
    with making:
        mkdir_in(making, "docs/sub/made")
    with deleting:
        assert delete_in(deleting, "docs/sub/b.txt", recursive=False)
    assert sorted(os.listdir(moved)) == ["made"]
    assert sorted(os.listdir(outside)) == ["b.txt"]
    assert (outside / "b.txt").read_text() == "CANARY"


def test_a_walk_started_after_the_swap_sees_the_link(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    swap_for_link(root / "docs" / "sub", outside)
    with pytest.raises(BadRequest) as caught:
        _open(root, ["docs", "sub", "b.txt"], "docs/sub/b.txt")
    assert caught.value.code == "path_outside_root"


# -- a race loop -------------------------------------------------------------------------


@contextmanager
def flipping(directory: Path, target: Path) -> Iterator[None]:
    """A thread that swaps ``directory`` and a link to ``target``, as fast as it can."""
    moved = directory.with_name(directory.name + "-real")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            os.rename(directory, moved)
            os.symlink(target, directory)
            os.unlink(directory)
            os.rename(moved, directory)

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def outcome(attempt: Callable[[], bytes]) -> str:
    try:
        return attempt().decode()
    except BadRequest:
        return "refused"
    except (NotFound, FileNotFoundError):
        return "missing"
    except AutoBotError as error:
        return error.code


def test_reads_under_a_flipping_directory_never_reach_outside(tree: tuple[Path, Path]) -> None:
    root, outside = tree

    def read() -> bytes:
        reader = _open(root, ["docs", "sub", "b.txt"], "docs/sub/b.txt")
        try:
            return _read(reader._descriptor, 0, 100)
        finally:
            reader._descriptor.close()

    seen: Counter[str] = Counter()
    with flipping(root / "docs" / "sub", outside):
        for _ in range(3000):
            seen[outcome(read)] += 1
    assert "CANARY" not in seen, seen
    assert seen["inside"] > 0 and seen["refused"] > 0, seen  # both sides of the race were met


def test_writes_under_a_flipping_directory_never_reach_outside(tree: tuple[Path, Path]) -> None:
    root, outside = tree

    def write() -> bytes:
        writer = _create(root, ["docs", "sub", "w.txt"], "docs/sub/w.txt", False)
        try:
            _publish(writer)
        finally:
            writer.place.close()
        return b"written"

    seen: Counter[str] = Counter()
    with flipping(root / "docs" / "sub", outside):
        # At least 2,000 tries, and on a busy machine more, until both outcomes showed.
        for tries in range(1, 20_000):
            seen[outcome(write)] += 1
            if tries >= 2000 and seen["written"] and seen["refused"]:
                break
    assert sorted(os.listdir(outside)) == ["b.txt"], seen
    assert seen["written"] > 0 and seen["refused"] > 0, seen
    assert sorted(os.listdir(root / "docs" / "sub")) == ["b.txt", "w.txt"]


def test_the_loop_catches_a_check_of_path_strings_then_an_open(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    real_root = os.path.realpath(root)
    path = root / "docs" / "sub" / "b.txt"

    def check_then_open() -> bytes:
        if not os.path.realpath(path).startswith(real_root + os.sep):
            raise BadRequest("outside", code="path_outside_root")
        with open(path, "rb") as file:
            return file.read()

    seen: Counter[str] = Counter()
    with flipping(root / "docs" / "sub", outside):
        for _ in range(20_000):
            seen[outcome(check_then_open)] += 1
            if seen["CANARY"]:
                break
    assert seen["CANARY"] > 0, seen
