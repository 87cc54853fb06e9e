"""kb_population on real files and a real store: facts, metadata, limits, exact resume."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from autobot import Settings
from autobot.operations import OperationContext, OperationStatus, execute, registry, run_operation
from autobot.operations.builtin._kb_population import (
    CHUNK_CHARS,
    fact_metadata,
    split_document,
)
from autobot.storage import Store, open_embedded_store

SENTENCE = "The indexer reads every file once and keeps what it found. "
LONG_PARAGRAPH = (SENTENCE * 60).strip()  # about 3,500 characters: three chunks

GUIDE = f"""An introduction before any heading.

# Install

Run the installer.

Then restart.

```sh
# a comment, not a heading

make install
```

## Usage

{LONG_PARAGRAPH}
"""

NOTES = "First note.\n\nSecond note.\n\n\nThird note.\n"

API = """=========
Reference
=========

The API in short.

Errors
------

Every error has a code.
"""


def make_docs(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text(GUIDE)
    (root / "notes.txt").write_text(NOTES)
    (root / "docs" / "api.rst").write_text(API)
    (root / "empty.md").write_text("")
    (root / "blank.txt").write_text("  \n\n \t\n")
    (root / "code.py").write_text("print('not a document')\n")


async def populate(settings: Settings, store: Store, **params: Any) -> dict[str, Any]:
    run = await run_operation("kb_population", params, settings=settings, store=store)
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    assert run.outcome.result is not None
    return run.outcome.result


def facts_of(facts: list[Any]) -> list[tuple[str, int, str | None, str]]:
    return sorted(
        (f.metadata["source"], f.metadata["chunk"], f.metadata.get("heading"), f.text)
        for f in facts
    )


async def test_files_become_facts_with_their_metadata(tmp_path: Path, store: Store) -> None:
    make_docs(tmp_path / "files" / "kb")
    result = await populate(Settings(data_dir=tmp_path), store, path="kb")
    facts = facts_of(await store.list_facts())

    guide = [fact for fact in facts if fact[0] == "docs/guide.md"]
    assert [(chunk, heading) for _, chunk, heading, _ in guide] == [
        (0, None),
        (1, "Install"),
        (2, "Usage"),
        (3, "Usage"),
        (4, "Usage"),
    ]
    assert guide[0][3] == "An introduction before any heading."
    assert guide[1][3].startswith("Run the installer.\n\nThen restart.\n\n```sh\n# a comment")
    usage = [text for _, _, _, text in guide[2:]]
    assert all(text.endswith(".") for text in usage)  # cut at sentence ends
    assert " ".join(usage) == LONG_PARAGRAPH
    assert [fact[1:] for fact in facts if fact[0] == "notes.txt"] == [
        (0, None, "First note.\n\nSecond note.\n\nThird note.")
    ]
    assert [fact[1:] for fact in facts if fact[0] == "docs/api.rst"] == [
        (0, "Reference", "The API in short."),
        (1, "Errors", "Every error has a code."),
    ]
    assert all(0 < len(text) <= CHUNK_CHARS and text.strip() == text for *_, text in facts)

    assert result["facts"] == len(facts) == 8
    assert result["files"] == 5  # empty.md and blank.txt count, with no facts
    assert sorted((f["path"], f["facts"]) for f in result["files_listed"]) == [
        ("blank.txt", 0),
        ("docs/api.rst", 2),
        ("docs/guide.md", 5),
        ("empty.md", 0),
        ("notes.txt", 1),
    ]


async def test_patterns_and_single_files(tmp_path: Path, store: Store) -> None:
    make_docs(tmp_path / "files" / "kb")
    settings = Settings(data_dir=tmp_path)
    result = await populate(settings, store, path="kb", patterns=["*.txt"])
    assert [f["path"] for f in result["files_listed"]] == ["blank.txt", "notes.txt"]
    result = await populate(settings, store, path="kb/docs/api.rst")
    assert result["files_listed"] == [{"path": "api.rst", "facts": 2}]


def test_chunks_and_metadata_stay_within_the_limits() -> None:
    word = "x" * 100_000
    chunks = split_document("w.txt", f"{word}\n\nshort {word} words")
    assert all(0 < len(text) <= CHUNK_CHARS for _, text in chunks)
    joined = "".join(text for _, text in chunks)
    assert joined.count("x") == 200_000 and "short" in joined and "words" in joined
    huge = fact_metadata("d/" * 3000 + "é.md", "Ω" * 10_000, 7)
    assert len(json.dumps(huge).encode()) <= 4096
    assert huge["chunk"] == 7 and huge["source"].startswith("d/d/") and huge["heading"]


async def test_outside_and_missing_paths_are_refused(tmp_path: Path, store: Store) -> None:
    settings = Settings(data_dir=tmp_path)
    for path, code in (("kb/../../x", "path_outside_root"), ("nowhere", "file_not_found")):
        run = await run_operation("kb_population", {"path": path}, settings=settings, store=store)
        assert run.outcome.status is OperationStatus.FAILED
        assert run.outcome.error is not None and run.outcome.error["code"] == code
    assert await store.list_facts() == []


async def stopped_after_saves(
    settings: Settings, store: Store, params: dict[str, Any], saves: int
) -> dict[str, Any]:
    """Run until the ``saves``-th checkpoint is saved, cancel, return that checkpoint.

    Checkpoints are saved after every fact, and ``processed_items`` counts
    files, so this is how a run is stopped between two facts of one file.
    """
    op_type = registry["kb_population"]
    saved: list[dict[str, Any]] = []
    with trio.CancelScope() as scope:

        async def keep(record: dict[str, Any]) -> None:
            saved.append(record)
            if len(saved) == saves:
                scope.cancel()

        ctx = OperationContext(
            operation_id="local",
            type_name=op_type.name,
            profile=settings.timeout_profiles()[op_type.name],
            checkpoint_every_item=op_type.checkpoint_every_item,
            settings=settings,
            store=store,
            save_checkpoint=keep,
        )
        await execute(op_type, ctx, op_type.parse_params(params), None)
    assert scope.cancelled_caught, "the run finished before it could be stopped"
    return saved[-1]


# Saves: 1 blank.txt done, 2-3 api.rst's facts, 4 it is done, 5-9 guide.md's facts, ...
@pytest.mark.parametrize("saves", [2, 3, 4, 7, 9, 11])
async def test_resume_adds_no_fact_twice(tmp_path: Path, saves: int) -> None:
    make_docs(tmp_path / "clean" / "files" / "kb")
    shutil.copytree(tmp_path / "clean" / "files", tmp_path / "stopped" / "files")
    async with open_embedded_store(tmp_path / "clean-store") as clean_store:
        await populate(Settings(data_dir=tmp_path / "clean"), clean_store, path="kb")
        clean = facts_of(await clean_store.list_facts())

    settings = Settings(data_dir=tmp_path / "stopped")
    async with open_embedded_store(tmp_path / "store") as store:
        checkpoint = await stopped_after_saves(settings, store, {"path": "kb"}, saves)
        before = len(await store.list_facts())
        assert 0 < before < len(clean)
        run = await run_operation(
            "kb_population", {"path": "kb"}, settings=settings, store=store, checkpoint=checkpoint
        )
        assert run.outcome.status is OperationStatus.COMPLETED
        facts = facts_of(await store.list_facts())
    duplicates = Counter((source, chunk) for source, chunk, *_ in facts)
    assert max(duplicates.values()) == 1
    assert facts == clean
    assert run.outcome.result is not None and run.outcome.result["facts"] == len(clean)
