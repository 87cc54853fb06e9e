"""The knowledge base in Python: all-or-none batches, searching before the index is built."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from autobot import ServiceUnavailable, StorageUnavailable
from autobot.knowledge import KeywordIndex, KnowledgeBase, NewFact
from autobot.storage import Store, open_embedded_store


class FullDiskAfter:
    """A real embedded store whose fact writes fail from the ``n``-th on, as on a full disk."""

    def __init__(self, store: Store, n: int) -> None:
        self._store, self._n, self.writes = store, n, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def put_fact(self, text: str, metadata: dict[str, Any] | None = None) -> Any:
        self.writes += 1
        if self.writes >= self._n:
            raise StorageUnavailable("the disk is full")
        return await self._store.put_fact(text, metadata)


async def test_a_batch_whose_write_fails_midway_leaves_nothing(tmp_path: pathlib.Path) -> None:
    async with open_embedded_store(tmp_path / "store") as store:
        failing = FullDiskAfter(store, 5)
        base = KnowledgeBase(tmp_path, lambda: failing)  # type: ignore[arg-type, return-value]
        with pytest.raises(StorageUnavailable, match="the disk is full"):
            await base.add_many([NewFact(f"fact {n}") for n in range(50)])
        assert failing.writes >= 5
        assert await store.list_facts() == []


async def test_before_the_index_is_built_searches_scan_the_store(tmp_path: pathlib.Path) -> None:
    async with open_embedded_store(tmp_path / "store") as store:
        base = KnowledgeBase(tmp_path, lambda: store)  # its service never started
        one = await base.add("Turbines spin in the wind.")
        both = await base.add("Wind, turbines and blades.", {"k": 1})
        await base.add("Postgres keeps the accounts.")
        hits = await base.search("turbines blades", 10)
        assert [(hit.id, hit.score) for hit in hits] == [(both.id, 2.0), (one.id, 1.0)]
        assert hits[0].metadata == {"k": 1}
        assert await base.search("turbine", 10) == []  # no stemming without the index
        await base.delete(both.id)
        assert [hit.id for hit in await base.search("turbines blades", 10)] == [one.id]
        with pytest.raises(ServiceUnavailable, match=r"not ready .*has not started"):
            await base.health_check.check()


async def test_a_fact_deleted_elsewhere_is_not_returned_by_a_lagging_index(
    tmp_path: pathlib.Path,
) -> None:
    async with open_embedded_store(tmp_path / "store") as store:
        base = KnowledgeBase(tmp_path, lambda: store)
        kept = await store.put_fact("Lighthouses guide ships.")
        gone = await store.put_fact("Lighthouses warn of rocks.")
        # An index that follows nothing: it lags behind every later change.
        base.index = await KeywordIndex.rebuild(
            tmp_path / "lagging", [(kept.id, kept.text), (gone.id, gone.text)]
        )
        await store.delete_fact(gone.id)  # as another process would
        assert {i for i, _ in await base.index.search("lighthouse", 10)} == {kept.id, gone.id}
        assert [hit.id for hit in await base.search("lighthouse", 10, "keyword")] == [kept.id]
