"""FilesRoot: listing, reading, writing, mkdir and delete through the descriptors of one walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from autobot import BadRequest, Conflict, NotFound, ValidationFailed
from autobot.files import FilesRoot


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha")
    (root / "docs" / "sub" / "b.txt").write_text("beta")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "canary.txt").write_text("CANARY")
    return root


@pytest.fixture
def files(root: Path) -> FilesRoot:
    return FilesRoot(root)


async def read_all(files: FilesRoot, client_path: str) -> bytes:
    async with await files.open(client_path) as reader:
        return await reader.read(0, reader.size + 1)


# -- listing ---------------------------------------------------------------------------------


async def test_listing_is_sorted_with_types_sizes_and_times(files: FilesRoot, root: Path) -> None:
    (root / "docs" / "B-upper.txt").write_bytes(b"12345")
    entries = await files.list("docs")
    assert [(e.name, e.type, e.size) for e in entries] == [
        ("B-upper.txt", "file", 5),
        ("a.txt", "file", 5),
        ("sub", "dir", 0),
    ]
    assert entries[1].modified_ns == os.stat(root / "docs" / "a.txt").st_mtime_ns


async def test_listing_shows_links_inside_as_their_target_and_hides_links_out(
    files: FilesRoot, root: Path, tmp_path: Path
) -> None:
    os.symlink("a.txt", root / "docs" / "alias")
    os.symlink("sub", root / "docs" / "subalias")
    os.symlink(tmp_path / "outside", root / "docs" / "out")
    os.symlink("nowhere", root / "docs" / "dangling")
    os.mkfifo(root / "docs" / "fifo")
    entries = {e.name: (e.type, e.size) for e in await files.list("docs")}
    assert entries == {
        "a.txt": ("file", 5),
        "alias": ("file", 5),
        "sub": ("dir", 0),
        "subalias": ("dir", 0),
    }


async def test_listing_over_the_limit_is_422_naming_it(files: FilesRoot, root: Path) -> None:
    for index in range(6):
        (root / "docs" / "sub" / f"f{index}").touch()
    assert len(await files.list("docs/sub", limit=7)) == 7
    with pytest.raises(ValidationFailed) as caught:
        await files.list("docs/sub", limit=5)
    assert caught.value.code == "too_many_entries"
    assert caught.value.details["limit"] == 5


async def test_listing_a_file_or_a_missing_path(files: FilesRoot) -> None:
    with pytest.raises(Conflict) as caught:
        await files.list("docs/a.txt")
    assert caught.value.code == "not_a_directory"
    with pytest.raises(NotFound):
        await files.list("nope")
    assert [e.name for e in await files.list("")] == ["docs"]


# -- reading ---------------------------------------------------------------------------------


async def test_a_reader_reads_at_offsets_and_keeps_its_file(files: FilesRoot, root: Path) -> None:
    reader = await files.open("docs/a.txt")
    async with reader:
        assert reader.size == 5
        assert await reader.read(1, 3) == b"lph"
        version = reader.version
        # Replaced by rename (as uploads are) and deleted: the reader keeps the file it opened.
        (root / "docs" / "new").write_text("other content")
        os.replace(root / "docs" / "new", root / "docs" / "a.txt")
        assert await reader.read(0, 100) == b"alpha"
    async with await files.open("docs/a.txt") as again:
        assert again.version != version


async def test_a_directory_is_not_opened_for_reading(files: FilesRoot, root: Path) -> None:
    for client_path in ("docs", ""):
        with pytest.raises(Conflict) as caught:
            await files.open(client_path)
        assert caught.value.code == "is_a_directory"
    os.mkfifo(root / "docs" / "fifo")
    with trio.fail_after(2), pytest.raises(Conflict) as refused:
        await files.open("docs/fifo")  # opening must not wait for a writer
    assert refused.value.code == "not_a_regular_file"


# -- writing ---------------------------------------------------------------------------------


async def test_a_writer_publishes_whole_and_leaves_no_temporary(
    files: FilesRoot, root: Path
) -> None:
    async with await files.create("docs/new.bin") as writer:
        await writer.write(b"abc")
        await writer.write(bytearray(b"def"))
        assert not (root / "docs" / "new.bin").exists()  # nothing under the name until published
        assert await writer.publish() == 6
    assert (root / "docs" / "new.bin").read_bytes() == b"abcdef"
    assert sorted(os.listdir(root / "docs")) == ["a.txt", "new.bin", "sub"]


async def test_one_write_of_more_pieces_than_one_pwritev_takes(
    files: FilesRoot, root: Path
) -> None:
    pieces = [bytes([index % 256]) * (index % 7 + 1) for index in range(3000)]
    async with await files.create("docs/pieces.bin") as writer:
        await writer.write(pieces)
        await writer.write([b"", b"end"])
        assert await writer.publish() == sum(map(len, pieces)) + 3
    assert (root / "docs" / "pieces.bin").read_bytes() == b"".join(pieces) + b"end"


async def test_a_writer_left_unpublished_removes_its_temporary(
    files: FilesRoot, root: Path
) -> None:
    with trio.CancelScope() as scope:
        async with await files.create("docs/a.txt") as writer:
            await writer.write(b"partial")
            assert any(name.endswith(".tmp") for name in os.listdir(root / "docs"))
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert sorted(os.listdir(root / "docs")) == ["a.txt", "sub"]
    assert (root / "docs" / "a.txt").read_text() == "alpha"


async def test_create_needs_the_parent_unless_parents(files: FilesRoot, root: Path) -> None:
    with pytest.raises(NotFound) as caught:
        await files.create("x/y/z.txt")
    assert caught.value.code == "file_not_found"
    assert not (root / "x").exists()
    async with await files.create("x/y/z.txt", parents=True) as writer:
        await writer.publish()
    assert (root / "x" / "y" / "z.txt").read_bytes() == b""
    with pytest.raises(Conflict) as under_a_file:
        await files.create("docs/a.txt/inner", parents=True)
    assert under_a_file.value.code == "not_a_directory"


async def test_create_over_a_directory_is_409(files: FilesRoot) -> None:
    for client_path in ("docs", "docs/sub", ""):
        with pytest.raises(Conflict) as caught:
            await files.create(client_path)
        assert caught.value.code == "is_a_directory"


async def test_an_upload_to_a_link_replaces_the_link_not_its_target(
    files: FilesRoot, root: Path, tmp_path: Path
) -> None:
    os.symlink(tmp_path / "outside" / "canary.txt", root / "docs" / "link")
    async with await files.create("docs/link") as writer:
        await writer.write(b"new")
        await writer.publish()
    assert not (root / "docs" / "link").is_symlink()
    assert (root / "docs" / "link").read_bytes() == b"new"
    assert (tmp_path / "outside" / "canary.txt").read_text() == "CANARY"


# -- mkdir and delete ------------------------------------------------------------------------


async def test_mkdir_with_and_without_parents(files: FilesRoot, root: Path) -> None:
    await files.mkdir("docs/new")
    assert (root / "docs" / "new").is_dir()
    with pytest.raises(Conflict) as exists:
        await files.mkdir("docs/new")
    assert exists.value.code == "already_exists"
    with pytest.raises(Conflict):
        await files.mkdir("docs/a.txt")  # taken by a file
    with pytest.raises(NotFound):
        await files.mkdir("p/q/r")
    await files.mkdir("p/q/r", parents=True)
    assert (root / "p" / "q" / "r").is_dir()
    with pytest.raises(Conflict):
        await files.mkdir("p/q/r", parents=True)


async def test_delete_files_empty_and_full_directories(files: FilesRoot, root: Path) -> None:
    await files.delete("docs/a.txt")
    assert not (root / "docs" / "a.txt").exists()
    with pytest.raises(Conflict) as full:
        await files.delete("docs")
    assert full.value.code == "directory_not_empty"
    (root / "empty").mkdir()
    await files.delete("empty")
    await files.delete("docs", recursive=True)
    assert os.listdir(root) == []
    with pytest.raises(NotFound):
        await files.delete("docs")
    with pytest.raises(BadRequest) as the_root:
        await files.delete("", recursive=True)
    assert the_root.value.code == "cannot_delete_root"
    assert root.is_dir()


async def test_a_recursive_delete_of_many_entries_takes_several_steps(
    files: FilesRoot, root: Path
) -> None:
    for top in range(3):
        deep = root / "tree" / f"d{top}" / "inner"
        deep.mkdir(parents=True)
        directory = os.open(deep, os.O_RDONLY)
        try:
            for index in range(500):
                os.close(os.open(f"f{index}", os.O_CREAT | os.O_WRONLY, dir_fd=directory))
        finally:
            os.close(directory)
    await files.delete("tree", recursive=True)  # 1,500 files: two batches at least
    assert os.listdir(root) == ["docs"]


async def test_delete_removes_links_and_never_what_they_lead_to(
    files: FilesRoot, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    os.symlink(outside, root / "docs" / "out")
    os.symlink(outside / "canary.txt", root / "docs" / "canary")
    await files.delete("docs/canary")
    await files.delete("docs", recursive=True)  # holds a link to a full directory outside
    assert not (root / "docs").exists()
    assert os.listdir(outside) == ["canary.txt"]
    assert (outside / "canary.txt").read_text() == "CANARY"


# -- escapes -------------------------------------------------------------------------------


async def test_every_operation_refuses_a_link_out_on_the_way(
    files: FilesRoot, root: Path, tmp_path: Path
) -> None:
    os.symlink(tmp_path / "outside", root / "out")

    async def create_and_publish() -> None:
        async with await files.create("out/new.txt", parents=True) as writer:
            await writer.publish()

    attempts = [
        lambda: files.list("out"),
        lambda: files.open("out/canary.txt"),
        create_and_publish,
        lambda: files.mkdir("out/dir", parents=True),
        lambda: files.delete("out/canary.txt"),
        lambda: files.delete("out/", recursive=True),
    ]
    for attempt in attempts[:-1]:
        with pytest.raises(BadRequest) as caught:
            await attempt()
        assert caught.value.code == "path_outside_root"
    await attempts[-1]()  # "out/" names the link itself: the link goes
    assert "out" not in os.listdir(root)
    assert os.listdir(tmp_path / "outside") == ["canary.txt"]
