"""The knowledge and maintenance types on real stores and files: kb upkeep, backups, cleanup."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autobot import Settings
from autobot.knowledge import KnowledgeBase
from autobot.llm import open_llm
from autobot.operations import OperationStatus, run_operation
from autobot.operations.builtin._analysis import terms
from autobot.storage import Priority, Store, open_embedded_store
from tests.operations.conftest import interrupted
from tests.support.fake_llm import FakeLLM, Scenario


@pytest.fixture
def settings(tmp_path: pathlib.Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fact_records(count: int, text: str = "fact number {n}") -> list[dict[str, Any]]:
    """``count`` fact records as an export has them, a millisecond apart, oldest first."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "kind": "fact",
            "id": f"fact-{n:05d}",
            "text": text.format(n=n),
            "metadata": {},
            "created_at": iso(start + timedelta(milliseconds=n)),
        }
        for n in range(count)
    ]


# -- kb_optimization ---------------------------------------------------------------------


async def test_kb_optimization_deletes_duplicates_keeping_the_oldest(
    settings: Settings, store: Store
) -> None:
    water = await store.put_fact("Water is wet")
    fire = await store.put_fact("Fire is hot", {"source": "a"})
    dup_water = [await store.put_fact(t) for t in ("water   is WET", "  Water\tis wet\n")]
    dup_fire = await store.put_fact("FIRE IS HOT")
    other = await store.put_fact("Water is wet.")  # punctuation differs: not a duplicate
    duplicates = [*dup_water, dup_fire]

    dry = await run_operation("kb_optimization", {"dry_run": True}, settings=settings, store=store)
    assert dry.outcome.result["duplicate_groups"] == 2
    assert sorted(dry.outcome.result["deleted_ids"]) == sorted(f.id for f in duplicates)
    assert len(await store.list_facts()) == 6

    run = await run_operation("kb_optimization", {}, settings=settings, store=store)
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    assert result["duplicate_groups"] == 2 and result["deleted"] == 3
    groups = {group["kept"]: sorted(group["deleted"]) for group in result["groups"]}
    assert groups == {water.id: sorted(f.id for f in dup_water), fire.id: [dup_fire.id]}
    assert [f.id for f in await store.list_facts()] == [water.id, fire.id, other.id]
    saved = sum(
        len(json.dumps({"kind": "fact", **f.to_json()}, ensure_ascii=False).encode())
        for f in duplicates
    )
    assert result["bytes_saved"] == saved == dry.outcome.result["bytes_saved"]
    again = await run_operation("kb_optimization", {}, settings=settings, store=store)
    assert again.outcome.result["duplicate_groups"] == 0
    with pytest.raises(Exception, match="dry_run"):
        await run_operation("kb_optimization", {"dry_run": "yes"}, settings=settings, store=store)


async def test_kb_optimization_embeds_the_facts_without_an_embedding(
    settings: Settings, store: Store, fake_llm: FakeLLM
) -> None:
    facts = [await store.put_fact(f"lighthouse number {n}") for n in range(300)]
    async with open_llm("ollama", fake_llm.ollama_url, "chat") as llm:
        base = KnowledgeBase(
            settings.data_dir, lambda: store, embed_model="fake-embed", embeddings=lambda: llm
        )
        await base.embed(facts[:10])  # these have one already
        await fake_llm.set_scenario(Scenario(embed_status=503))
        failing = await run_operation(
            "kb_optimization", {}, settings=settings, store=store, knowledge=base
        )
        result = failing.outcome.result
        assert failing.outcome.status == OperationStatus.COMPLETED
        assert (result["missing_embeddings"], result["embedded"]) == (290, 0)
        assert result["embedding_failed"] == 290
        assert len(await base.unembedded()) == 290  # still keyword-only

        await fake_llm.set_scenario(Scenario())
        dry = await run_operation(
            "kb_optimization", {"dry_run": True}, settings=settings, store=store, knowledge=base
        )
        assert (dry.outcome.result["missing_embeddings"], dry.outcome.result["embedded"]) == (
            290,
            0,
        )
        run = await run_operation(
            "kb_optimization", {}, settings=settings, store=store, knowledge=base
        )
        result = run.outcome.result
        assert result["embedding_model"] == "fake-embed"
        assert (result["missing_embeddings"], result["embedded"], result["embedding_failed"]) == (
            290,
            290,
            0,
        )
        assert await base.unembedded() == []
        stored = await store.get_fact_vectors("fake-embed", [facts[0].id, facts[299].id])
        assert len(stored[facts[299].id]) == 256 * 4


async def test_kb_optimization_without_a_model_embeds_nothing(
    settings: Settings, store: Store
) -> None:
    await store.put_fact("a fact")
    run = await run_operation("kb_optimization", {}, settings=settings, store=store)
    assert run.outcome.result["embedding_model"] is None


# -- vector_indexing -----------------------------------------------------------------------


def read_index(path: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    header, vocabulary, *vectors = (json.loads(line) for line in path.read_text().splitlines())
    return header, vocabulary, vectors


async def test_vector_indexing_writes_an_index_a_search_can_use(
    settings: Settings, store: Store
) -> None:
    texts = [
        "Trio cancels tasks through cancel scopes",
        "Redis keeps the shared state of several processes",
        "The embedded store keeps its journal on disk",
        "A cancel scope has a deadline",
    ]
    facts = [await store.put_fact(text) for text in texts]
    run = await run_operation("vector_indexing", {}, settings=settings, store=store)
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    path = settings.data_dir / "knowledge" / "vectors.jsonl"
    header, vocabulary, vectors = read_index(path)
    assert header["format"] == "autobot.term_vectors" and header["version"] == 1
    assert header["vocabulary_size"] == len(vocabulary["terms"]) == result["vocabulary_size"]
    assert "the" not in vocabulary["terms"] and "cancel" in vocabulary["terms"]
    assert [v["id"] for v in vectors] == [f.id for f in facts]
    assert result["facts_indexed"] == 4 and result["bytes"] == path.stat().st_size
    for vector in vectors:
        assert sum(w * w for w in vector["weights"]) == pytest.approx(1, abs=1e-5)
    # A search: the query weighed by the stored IDFs, ranked by dot product.
    index = {term: n for n, term in enumerate(vocabulary["terms"])}
    query = {index[t]: vocabulary["idf"][index[t]] for t in terms("cancel scope deadline")}
    scores = [
        sum(query.get(i, 0) * w for i, w in zip(v["terms"], v["weights"], strict=True))
        for v in vectors
    ]
    assert max(range(4), key=scores.__getitem__) == 3
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


async def test_a_resumed_vector_index_keeps_the_vectors_already_written(
    settings: Settings, store: Store
) -> None:
    await store.import_records(fact_records(300, "fact {n} about storage and trio"))
    checkpoint = await interrupted("vector_indexing", {}, settings, store, after=100)
    temporary = settings.data_dir / "knowledge" / checkpoint["state"]["temporary"]
    _, vocabulary, _ = read_index(temporary)
    # Changes after the interruption: an indexed fact deleted, a fact with a new word added.
    await store.delete_fact("fact-00007")
    added = await store.put_fact("zebras are new here")
    run = await run_operation(
        "vector_indexing", {}, settings=settings, store=store, checkpoint=checkpoint
    )
    assert run.outcome.status == OperationStatus.COMPLETED
    header, vocabulary_after, vectors = read_index(
        settings.data_dir / "knowledge" / "vectors.jsonl"
    )
    ids = [vector["id"] for vector in vectors]
    assert len(ids) == len(set(ids)) == 301 == run.outcome.result["facts_indexed"]
    assert "fact-00007" in ids and added.id in ids  # written before, so not taken back
    # The vocabulary is the first run's: the resumed run did not count the terms again.
    assert vocabulary_after == vocabulary and "zebras" not in vocabulary["terms"]
    assert header["facts"] == 300
    assert not temporary.exists()


# -- backup_operation and migration_operation --------------------------------------------------


async def fill(store: Store) -> None:
    for n in range(2):
        chat = await store.create_chat(f"chat {n}")
        for i in range(3):
            await store.append_message(chat.id, "user" if i % 2 else "assistant", f"{n}.{i} é")
    await store.put_fact("water is wet", {"confidence": 0.9})
    await store.put_operation({"id": "op-1", "type": "index", "status": "cancelled"})
    await store.put_checkpoint("op-1", {"done": 12})
    await store.register_agent("idle")
    await store.push_inbox("worker", {"type": "request", "payload": {"x": 1}}, Priority.HIGH)


async def snapshot(store: Store) -> dict[str, Any]:
    chats = await store.list_chats()
    return {
        "chats": chats,
        "messages": {chat.id: await store.get_messages(chat.id) for chat in chats},
        "facts": await store.list_facts(),
        "operations": await store.list_operations(),
        "checkpoint": await store.get_checkpoint("op-1"),
        "agents": await store.list_agents(),
    }


async def test_a_backup_round_trips_through_migration_into_a_fresh_store(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    await fill(store)
    run = await run_operation("backup_operation", {}, settings=settings, store=store)
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    assert result["path"].startswith("backups/autobot-") and result["path"].endswith("Z.jsonl")
    backup = settings.data_dir / "files" / result["path"]
    data = backup.read_bytes()
    assert result["bytes"] == len(data) and result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["records"] == len(data.splitlines()) == 2 + 6 + 1 + 1 + 1 + 2 + 1
    assert os.listdir(backup.parent) == [backup.name]  # no temporary file left

    async with open_embedded_store(tmp_path / "fresh") as fresh:
        imported = await run_operation(
            "migration_operation", {"path": result["path"]}, settings=settings, store=fresh
        )
        assert imported.outcome.status == OperationStatus.COMPLETED
        assert imported.outcome.result["records_imported"] == result["records"]
        assert imported.outcome.result["by_kind"] == {
            "agent": 2, "chat": 2, "checkpoint": 1, "fact": 1,
            "inbox_message": 1, "message": 6, "operation": 1,
        }  # fmt: skip
        assert await snapshot(fresh) == await snapshot(store)
        assert [m.body for m in await fresh.pop_inbox("worker", 5)] == [
            {"type": "request", "payload": {"x": 1}}
        ]


async def test_a_cancelled_backup_leaves_no_file(settings: Settings, store: Store) -> None:
    await store.import_records(fact_records(3000, "{n} " + "padding " * 60))
    backups = settings.data_dir / "files" / "backups"
    seen: list[os.stat_result] = []

    def look() -> None:
        seen.extend(entry.stat() for entry in backups.iterdir())

    # Cancelled once 2,000 records (about a megabyte) are written, well past the first chunks.
    await interrupted("backup_operation", {}, settings, store, after=2000, before_cancel=look)
    assert len(seen) == 1 and seen[0].st_size > 500_000  # the partial file, while it was there
    assert os.listdir(backups) == []


async def test_migration_resumes_after_the_last_imported_batch(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    source = settings.data_dir / "files" / "export.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text("".join(json.dumps(r) + "\n" for r in fact_records(35)))
    params = {"path": "export.jsonl", "batch_size": 10}
    checkpoint = await interrupted("migration_operation", params, settings, store, after=20)
    assert checkpoint["state"]["line"] == 20 and checkpoint["state"]["imported"] == 20
    assert len(await store.list_facts()) == 20
    # Deleted after its batch was imported: importing that batch again would bring it back.
    await store.delete_fact("fact-00003")
    run = await run_operation(
        "migration_operation", params, settings=settings, store=store, checkpoint=checkpoint
    )
    assert run.outcome.status == OperationStatus.COMPLETED
    assert run.outcome.result == {
        "path": "export.jsonl", "lines": 35, "records_imported": 35, "by_kind": {"fact": 35},
    }  # fmt: skip
    ids = {fact.id for fact in await store.list_facts()}
    assert len(ids) == 34 and "fact-00003" not in ids and "fact-00034" in ids


async def test_a_malformed_line_is_a_failed_item_naming_its_line(
    tmp_path: pathlib.Path, store: Store
) -> None:
    lines = [json.dumps(r) for r in fact_records(6)]
    lines[2] = "{not json"
    lines[4] = json.dumps({"kind": "spaceship", "id": "x"})
    source = tmp_path / "data" / "files" / "broken.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text("\n".join(lines) + "\n")
    strict = Settings(data_dir=tmp_path / "data")
    run = await run_operation(
        "migration_operation", {"path": "broken.jsonl"}, settings=strict, store=store
    )
    assert run.outcome.status == OperationStatus.FAILED
    assert run.outcome.result["failures"] == [{"item": "line 3", "error": "line 3 is not JSON"}]
    assert await store.list_facts() == []  # the batch with the bad line was not imported
    assert run.checkpoint is None or run.checkpoint["state"]["line"] == 0

    lenient = Settings(
        data_dir=tmp_path / "data",
        operation_profiles={"migration_operation": {"failure_threshold": 10}},
    )
    run = await run_operation(
        "migration_operation", {"path": "broken.jsonl"}, settings=lenient, store=store
    )
    assert run.outcome.status == OperationStatus.COMPLETED
    assert [f["item"] for f in run.outcome.result["failures"]] == ["line 3", "line 5"]
    assert run.outcome.result["records_imported"] == 4
    assert len(await store.list_facts()) == 4


# -- cleanup_operation ---------------------------------------------------------------------------


def aged(path: pathlib.Path, text: str, hours: float) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    moment = time.time() - hours * 3600
    os.utime(path, (moment, moment))
    return path


def iso_days_ago(days: float) -> str:
    return iso(datetime.now(UTC) - timedelta(days=days))


async def test_cleanup_removes_old_checkpoints_and_stale_temporary_files_only(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    operations = {
        "old": {"status": "completed", "finished_at": iso_days_ago(10)},
        "recent": {"status": "failed", "finished_at": iso_days_ago(1)},
        "running": {"status": "running", "finished_at": None},
    }
    for name, fields in operations.items():
        summary = {"processed_items": 1, "created_at": iso_days_ago(10)}
        await store.put_operation(
            {"id": name, "type": "code_analysis", "checkpoint": summary, **fields}
        )
        await store.put_checkpoint(name, {"state": {"n": 1}})
    data = settings.data_dir
    old_tmp = aged(data / "files" / "backups" / ".autobot-1.jsonl.ab12.tmp", "x" * 10, 48)
    old_partial = aged(data / "operations" / "op-1" / "download.partial", "y" * 7, 30)
    fresh_tmp = aged(data / "files" / "fresh.tmp", "z", 1)
    # What a resumable operation resumes from is kept while its checkpoint is.
    resumable_partial = aged(data / "operations" / "recent" / "index.jsonl.partial", "p", 48)
    not_temporary = aged(data / "files" / "notes.txt", "keep", 100)
    outside = aged(tmp_path / "outside" / "stale.tmp", "outside", 100)
    (data / "files" / "link").symlink_to(outside.parent, target_is_directory=True)
    (data / "files" / "linked.tmp").symlink_to(outside)

    run = await run_operation("cleanup_operation", {}, settings=settings, store=store)
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    assert result["checkpoints_removed"] == ["old"]
    assert sorted(result["files_removed"]) == [
        "files/backups/.autobot-1.jsonl.ab12.tmp",
        "operations/op-1/download.partial",
    ]
    assert result["bytes_freed"] == 17
    assert not old_tmp.exists() and not old_partial.exists()
    assert fresh_tmp.exists() and not_temporary.exists() and outside.exists()
    assert (data / "files" / "linked.tmp").is_symlink()
    assert await store.get_checkpoint("old") is None
    assert (await store.get_operation("old"))["checkpoint"] is None
    assert await store.get_checkpoint("recent") is not None
    assert resumable_partial.exists()
    assert run.context.processed_items == run.context.total_items == 3

    everything = await run_operation(
        "cleanup_operation",
        {"checkpoint_age_days": 0, "temp_age_hours": 0},
        settings=settings,
        store=store,
    )
    assert everything.outcome.result["checkpoints_removed"] == ["recent"]
    assert sorted(everything.outcome.result["files_removed"]) == [
        "files/fresh.tmp",
        "operations/recent/index.jsonl.partial",
    ]
    assert await store.get_checkpoint("running") is not None
    assert outside.exists() and not_temporary.exists()


# -- monitoring_collection ---------------------------------------------------------------------


async def test_monitoring_writes_the_samples_asked_for(settings: Settings, store: Store) -> None:
    await store.put_operation({"id": "a", "type": "x", "status": "completed"})
    await store.put_operation({"id": "b", "type": "x", "status": "queued"})
    run = await run_operation(
        "monitoring_collection",
        {"samples": 3, "interval_s": 0.01, "path": "metrics/run.jsonl"},
        settings=settings,
        store=store,
    )
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    assert result["path"] == "metrics/run.jsonl" and result["samples"] == 3
    path = settings.data_dir / "files" / "metrics" / "run.jsonl"
    samples = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["sample"] for s in samples] == [1, 2, 3]
    for sample in samples:
        assert sample["process"]["rss_bytes"] > 1_000_000
        assert sample["process"]["open_fds"] > 0 and sample["process"]["threads"] >= 1
        assert sample["operations"] == {"total": 2, "by_status": {"completed": 1, "queued": 1}}
        assert 0 < sample["disk"]["free_bytes"] <= sample["disk"]["total_bytes"]
    rss = [s["process"]["rss_bytes"] for s in samples]
    assert result["summary"]["rss_bytes"] == {"min": min(rss), "max": max(rss), "last": rss[-1]}
    assert result["bytes"] == path.stat().st_size
    assert os.listdir(path.parent) == ["run.jsonl"]

    default = await run_operation(
        "monitoring_collection", {"samples": 1, "interval_s": 0}, settings=settings, store=store
    )
    assert default.outcome.result["path"].startswith("monitoring/")
    with pytest.raises(Exception, match="samples"):
        await run_operation("monitoring_collection", {"samples": 0}, settings=settings, store=store)


async def test_a_resumed_monitoring_keeps_the_samples_already_taken(
    settings: Settings, store: Store
) -> None:
    params = {"samples": 4, "interval_s": 0.01, "path": "m.jsonl"}
    checkpoint = await interrupted("monitoring_collection", params, settings, store, after=2)
    temporary = settings.data_dir / "files" / checkpoint["state"]["temporary"]
    taken = temporary.read_bytes().splitlines()
    assert len(taken) == 2
    run = await run_operation(
        "monitoring_collection", params, settings=settings, store=store, checkpoint=checkpoint
    )
    assert run.outcome.status == OperationStatus.COMPLETED
    lines = (settings.data_dir / "files" / "m.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["sample"] for line in lines] == [1, 2, 3, 4]
    assert lines[:2] == taken  # the first two samples were not taken again
    assert not temporary.exists()
