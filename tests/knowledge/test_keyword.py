"""The keyword index: stemming, ranking, deletes, reopening, and indexes that must be rebuilt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trio

from autobot.knowledge import MARKER, KeywordIndex, KeywordIndexUnusable


class StoredFacts:
    """An async iterable of facts, as a store's listing would give them."""

    def __init__(self, count: int) -> None:
        self.pending = [(f"f{n}", f"fact number {n} about turbines") for n in range(count)]

    def __aiter__(self) -> StoredFacts:
        return self

    async def __anext__(self) -> tuple[str, str]:
        if not self.pending:
            raise StopAsyncIteration
        return self.pending.pop()


async def test_a_word_in_another_form_finds_the_fact(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add("a", "The service runs every night.")
    await index.add("b", "A cat sleeps on the mat.")
    assert [fact_id for fact_id, _ in await index.search("running", 10)] == ["a"]


async def test_the_fact_with_more_of_the_terms_ranks_first(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add_many(
        [
            ("once", "Redis keeps the queue; the workers poll it."),
            ("thrice", "Redis replicas follow the Redis primary; Redis sentinels watch it."),
            ("none", "Postgres keeps the accounts."),
        ]
    )
    results = await index.search("redis", 10)
    assert [fact_id for fact_id, _ in results] == ["thrice", "once"]
    assert results[0][1] > results[1][1] > 0


async def test_facts_with_equal_scores_come_in_the_order_of_their_ids(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    ids = ["m", "c", "x", "a", "q", "f"]  # added in an order that is not theirs
    for fact_id in ids:
        await index.add(fact_id, "The gearbox hums.")  # one commit, one segment each
    results = await index.search("gearbox", 3)
    assert len({score for _, score in results}) == 1
    assert [fact_id for fact_id, _ in results] == ["a", "c", "f"]


async def test_query_syntax_is_only_words(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add("a", "Cats and dogs.")
    assert [i for i, _ in await index.search('text:"cats AND (dogs', 10)] == ["a"]
    assert await index.search('"" :: -', 10) == []


async def test_a_deleted_fact_is_never_returned(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add_many([(f"f{n}", f"shared words, fact {n}") for n in range(5)])
    await index.delete("f2")
    assert "f2" not in [i for i, _ in await index.search("shared words", 10)]
    assert await index.count() == 4
    assert [i for i, _ in await index.search("fact 2", 10)][:1] != ["f2"]


async def test_adding_an_id_again_replaces_its_text(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add("a", "old wording")
    await index.add("a", "new wording")
    assert await index.count() == 1
    assert await index.search("old", 10) == []


async def test_a_reopened_index_keeps_its_facts(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add_many([("a", "alpha beta"), ("b", "gamma delta")])
    await index.delete("b")
    del index
    reopened = await KeywordIndex.open(tmp_path / "kw")
    assert await reopened.count() == 1
    assert [i for i, _ in await reopened.search("alpha gamma", 10)] == ["a"]


async def test_an_index_of_another_version_must_be_rebuilt(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add("a", "alpha")
    del index
    marker = tmp_path / "kw" / MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "schema": 0}))
    with pytest.raises(KeywordIndexUnusable, match="another version"):
        await KeywordIndex.open(tmp_path / "kw")


async def test_a_corrupt_index_must_be_rebuilt(tmp_path: Path) -> None:
    index = await KeywordIndex.open(tmp_path / "kw")
    await index.add("a", "alpha")
    del index
    (tmp_path / "kw" / "meta.json").write_text("{not json")
    with pytest.raises(KeywordIndexUnusable, match="cannot be read"):
        await KeywordIndex.open(tmp_path / "kw")


async def test_a_directory_without_a_marker_must_be_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "kw").mkdir()
    (tmp_path / "kw" / "stray").write_text("x")
    with pytest.raises(KeywordIndexUnusable, match="marker"):
        await KeywordIndex.open(tmp_path / "kw")


async def test_rebuild_replaces_an_unusable_index(tmp_path: Path) -> None:
    (tmp_path / "kw").mkdir()
    (tmp_path / "kw" / "meta.json").write_text("{not json")

    index = await KeywordIndex.rebuild(tmp_path / "kw", StoredFacts(12))
    assert await index.count() == 12
    assert len(await index.search("turbine", 100)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kw"]
    reopened_later = await KeywordIndex.rebuild(tmp_path / "kw", [("x", "a windmill")])
    assert [i for i, _ in await reopened_later.search("windmills", 10)] == ["x"]


async def test_a_write_into_a_deleted_directory_says_unusable(tmp_path: Path) -> None:
    index = await KeywordIndex.rebuild(tmp_path / "kw", [("a", "first fact")])
    shutil.rmtree(tmp_path / "kw")
    with pytest.raises(KeywordIndexUnusable, match="cannot be written"):
        await index.change([("b", "second fact")], ["a"])


async def test_concurrent_changes_share_commits_and_all_land(tmp_path: Path) -> None:
    index = await KeywordIndex.rebuild(tmp_path / "kw", [("old", "an old turbine")])
    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(index.add, f"f{n}", f"turbine number {n}")
        nursery.start_soon(index.delete, "old")
    found = {fact_id for fact_id, _ in await index.search("turbines", 100)}
    assert found == {f"f{n}" for n in range(20)}


async def test_a_failed_shared_commit_fails_every_caller(tmp_path: Path) -> None:
    index = await KeywordIndex.rebuild(tmp_path / "kw", [("a", "first fact")])
    shutil.rmtree(tmp_path / "kw")
    failures: list[BaseException] = []

    async def add(n: int) -> None:
        try:
            await index.add(f"f{n}", "text")
        except KeywordIndexUnusable as error:
            failures.append(error)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(add, n)
    assert len(failures) == 5
