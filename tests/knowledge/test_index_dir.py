"""Each process's index directory: claimed with a lock, and dead processes' directories removed."""

from __future__ import annotations

import pathlib

from autobot.knowledge._index_dir import claim, new_suffix, release


def test_a_dead_processs_directory_is_removed_and_a_live_ones_kept(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "knowledge"
    live = claim(root, new_suffix())
    live.directory.mkdir()
    dead = root / "keyword-1-deadbeef"
    (dead / "seg").mkdir(parents=True)
    (root / "keyword-1-deadbeef.rebuild").mkdir()
    (root / "keyword-1-deadbeef.lock").touch()  # nobody holds it
    unrelated = root / "notes"
    unrelated.mkdir()

    mine = claim(root, new_suffix())
    assert not dead.exists()
    assert not (root / "keyword-1-deadbeef.rebuild").exists()
    assert not (root / "keyword-1-deadbeef.lock").exists()
    assert live.directory.exists()  # its lock is held
    assert unrelated.exists()

    release(mine)
    release(live)
    assert sorted(p.name for p in root.iterdir()) == ["notes"]
