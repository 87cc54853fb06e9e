"""The exact vector index: ranking, deletes and replaces, dimensions, cancelled searches."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from autobot.knowledge._cpu import cpu_limiter
from autobot.knowledge._vectors import DimensionMismatch, VectorIndex
from tests.support.fake_llm import fake_embedding
from tests.support.polling import eventually

FACTS = {
    "cats": "cats sleep on the warm windowsill",
    "dogs": "dogs bark at the postman every morning",
    "trains": "the night train leaves the station at nine",
    "rain": "heavy rain floods the streets in autumn",
}


def corpus_index() -> VectorIndex:
    index = VectorIndex()
    index.add(list(FACTS), [fake_embedding(text) for text in FACTS.values()])
    return index


async def test_the_nearest_fact_ranks_first() -> None:
    index = corpus_index()
    hits = await index.search(fake_embedding("where does the cat sleep"), 3)
    assert hits[0][0] == "cats"
    assert len(hits) == 3
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0
    assert (await index.search(fake_embedding(FACTS["rain"]), 1))[0] == ("rain", pytest.approx(1))
    assert index.nearest(fake_embedding("the train station"), 1)[0][0] == "trains"


async def test_a_limit_above_the_size_returns_everything() -> None:
    index = corpus_index()
    assert len(index) == 4 and index.dimension == 256
    assert sorted(fact for fact, _ in await index.search(fake_embedding("x"), 100)) == sorted(FACTS)
    assert await VectorIndex().search([1.0, 0.0], 10) == []


async def test_a_deleted_fact_is_never_returned() -> None:
    index = corpus_index()
    assert index.delete(["cats", "unknown"]) == 1
    assert "cats" not in index and len(index) == 3
    hits = await index.search(fake_embedding(FACTS["cats"]), 10)
    assert "cats" not in {fact for fact, _ in hits} and len(hits) == 3


async def test_adding_an_id_again_replaces_its_vector() -> None:
    index = corpus_index()
    index.add(["cats"], [fake_embedding("jet engines roar on the runway")])
    assert len(index) == 4
    assert (await index.search(fake_embedding("jet engine runway"), 1))[0][0] == "cats"
    hits = await index.search(fake_embedding(FACTS["cats"]), 4)
    assert [fact for fact, _ in hits].count("cats") == 1
    assert dict(hits)["cats"] < 0.5


def test_vectors_are_normalised_and_checked() -> None:
    index = VectorIndex(3)
    index.add(["a", "b", "a"], [[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 3.0]])
    assert len(index) == 2
    assert index.nearest([0.0, 0.0, 1.0], 1) == [("a", pytest.approx(1.0))]
    with pytest.raises(DimensionMismatch, match="3 dimensions, not 4"):
        index.add(["c"], [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(DimensionMismatch):
        index.nearest([1.0, 0.0], 1)
    with pytest.raises(ValueError, match="not zero"):
        index.add(["c"], [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        index.add(["c", "d"], [[1.0, 0.0, 0.0]])
    assert sorted(index.ids()) == ["a", "b"]  # nothing of the failed adds


def test_the_first_add_fixes_the_dimension() -> None:
    index = VectorIndex()
    assert index.dimension is None
    index.add(["a"], [[1.0, 1.0]])
    assert index.dimension == 2
    index.clear()
    assert len(index) == 0 and index.dimension == 2


def test_many_deletes_compact_and_keep_the_rest() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((10_000, 16)).astype(np.float32)
    index = VectorIndex()
    ids = [f"f{n}" for n in range(len(vectors))]
    index.add(ids, vectors)
    index.delete(ids[:9_000])
    assert len(index) == 1_000
    assert index._rows == 1_000  # compacted
    for n in (9_000, 9_500, 9_999):
        assert index.nearest(vectors[n], 1)[0][0] == ids[n]
    index.add(ids[:1], vectors[:1])
    assert index.nearest(vectors[0], 1)[0][0] == ids[0]
    index.delete(ids[9_000:])
    assert index.nearest(vectors[0], 5) == [(ids[0], pytest.approx(1.0))]


async def test_a_delete_during_a_search_is_not_returned() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((100_000, 64)).astype(np.float32)
    index = VectorIndex()
    ids = [f"f{n}" for n in range(len(vectors))]
    index.add(ids, vectors)
    results: list[list[tuple[str, float]]] = []
    async with trio.open_nursery() as nursery:

        async def search() -> None:
            results.append(await index.search(vectors[5], 10))

        nursery.start_soon(search)
        await trio.testing.wait_all_tasks_blocked()  # the search is in its thread
        index.delete(["f5"])
        index.add(["f6"], vectors[5:6])  # replaced meanwhile: its old row is stale
    [hits] = results
    found = [fact for fact, _ in hits]
    assert "f5" not in found and len(hits) == 10
    assert found.count("f6") <= 1


async def test_a_cancelled_search_returns_at_once_and_frees_its_thread() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((100_000, 128)).astype(np.float32)
    index = VectorIndex()
    index.add([f"f{n}" for n in range(len(vectors))], vectors)
    limiter = cpu_limiter()
    with trio.CancelScope() as scope:

        async def cancel_when_in_thread() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_in_thread)
            await index.search(vectors[0], 10)
            pytest.fail("the search should have been cancelled")
    assert scope.cancelled_caught

    async def thread_done() -> bool:
        return limiter.borrowed_tokens == 0

    with trio.fail_after(5):
        assert await eventually(thread_done)
    assert (await index.search(vectors[1], 1))[0][0] == "f1"
