"""Knowledge base semantic search: exact cosine (numpy) against usearch's HNSW, in one run.

The facts are the issue's benchmark corpus: 100,000 facts of 12 words drawn
uniformly from a 5,000-word vocabulary, embedded the way the test fake LLM
embeds them (``tests/support/fake_llm.py``: words hashed onto 256 signed
dimensions, summed, normalised), so texts sharing words are close. Queries
are 500 texts of 1 to 3 vocabulary words. Each engine then does:

* build: every vector in, ready to search;
* memory: the engine's own accounting of its vectors and graph;
* search p50/p99 of a query vector, limit 10, on one thread;
* add 1,000 vectors, then delete 1,000;
* recall@10: the share of its 10 results that belong in the exact top 10.
  Many facts share a query word and score alike, so a result counts when its
  true cosine is at least the exact 10th best (a tie with the reference is
  not a miss); the exact engine is the reference, so its recall is 1.0.

The exact engine is AutoBot's own :class:`~autobot.knowledge._vectors.VectorIndex`
(``nearest``, the same kernel :meth:`search` runs in its thread). usearch is
measured with ``f32``, ``f16`` and ``i8`` storage, and at a wider search
(``expansion_search`` 256) for recall; it is skipped when not installed
(``pip install usearch``: it is not a dependency).

    .venv/bin/python bench/kb_vector_bench.py [--facts 100000] [--queries 500] [--dimension 256]
        [--exact-only]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobot.knowledge._vectors import VectorIndex
from tests.support.fake_llm import fake_embedding

VOCABULARY = 5_000
WORDS_PER_FACT = 12
ADDS = 1_000
DELETES = 1_000
LIMIT = 10


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


class Corpus:
    """Fact and query vectors, from one seed."""

    def __init__(self, facts: int, queries: int, dimension: int, seed: int = 11) -> None:
        rng = random.Random(seed)
        words = [f"w{n}x" for n in range(VOCABULARY)]

        def embed(count_of_words: Callable[[], int], count: int) -> np.ndarray:
            texts = (" ".join(rng.choices(words, k=count_of_words())) for _ in range(count))
            return np.array([fake_embedding(t, dimension) for t in texts], dtype=np.float32)

        self.vectors = embed(lambda: WORDS_PER_FACT, facts + ADDS)
        self.queries = embed(lambda: rng.randint(1, 3), queries)
        self.facts = facts


class Exact:
    name = "exact (numpy, VectorIndex)"

    def __init__(self, dimension: int) -> None:
        self.index = VectorIndex(dimension)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add([str(k) for k in keys], vectors)

    def delete(self, keys: np.ndarray) -> None:
        self.index.delete(str(k) for k in keys)

    def search(self, query: np.ndarray) -> list[int]:
        return [int(key) for key, _ in self.index.nearest(query, LIMIT)]

    def memory(self) -> int:
        index = self.index
        blocks = sum(block.nbytes for block in index._blocks)
        return blocks + index._alive.nbytes + index._serials.nbytes


class USearch:
    def __init__(self, dimension: int, dtype: str, expansion_search: int | None = None) -> None:
        from usearch.index import Index

        self.name = f"usearch HNSW {dtype}" + (
            f", expansion_search {expansion_search}" if expansion_search else ""
        )
        self.index = Index(ndim=dimension, metric="ip", dtype=dtype)
        if expansion_search:
            self.index.expansion_search = expansion_search

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(keys, vectors, threads=1)

    def delete(self, keys: np.ndarray) -> None:
        self.index.remove(keys)

    def search(self, query: np.ndarray) -> list[int]:
        return [int(key) for key in self.index.search(query, LIMIT, threads=1).keys]

    def memory(self) -> int:
        return int(self.index.memory_usage)


def measure(engine: Any, corpus: Corpus, tenth_best: list[float]) -> dict[str, Any]:
    facts = corpus.facts
    keys = np.arange(facts + ADDS, dtype=np.uint64)
    result: dict[str, Any] = {"engine": engine.name}
    result["build_s"] = timed(lambda: engine.add(keys[:facts], corpus.vectors[:facts]))
    result["memory_mb"] = engine.memory() / 1e6
    latencies, found = [], 0
    for query, threshold in zip(corpus.queries, tenth_best, strict=True):
        start = time.perf_counter()
        hits = engine.search(query)
        latencies.append(time.perf_counter() - start)
        true_scores = corpus.vectors[hits] @ (query / np.linalg.norm(query))
        found += int((true_scores >= threshold - 1e-5).sum())
    result["p50_ms"] = statistics.median(latencies) * 1e3
    result["p99_ms"] = percentile(latencies, 0.99) * 1e3
    result["recall"] = found / (LIMIT * len(tenth_best))
    result["add_s"] = timed(lambda: engine.add(keys[facts:], corpus.vectors[facts:]))
    result["delete_s"] = timed(lambda: engine.delete(keys[:DELETES]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dimension", type=int, default=256)
    parser.add_argument("--exact-only", action="store_true", help="skip usearch")
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = Corpus(args.facts, args.queries, args.dimension)
    print(
        f"{args.facts} facts x {args.dimension} dims, {args.queries} queries, "
        f"{os.cpu_count()} cores; vectors made in {time.perf_counter() - start:.1f} s"
    )
    exact = Exact(args.dimension)
    exact.add(np.arange(args.facts), corpus.vectors[: args.facts])
    tenth_best = [exact.index.nearest(query, LIMIT)[-1][1] for query in corpus.queries]
    engines: list[Callable[[], Any]] = [lambda: Exact(args.dimension)]
    variants = () if args.exact_only else (("f32", None), ("f16", None), ("i8", None), ("f32", 256))
    for dtype, expansion in variants:
        engines.append(lambda d=dtype, e=expansion: USearch(args.dimension, d, e))
    header = (
        "| engine | build | memory | search p50 | search p99 | recall@10 | add 1k | delete 1k |"
    )
    rows = []
    for factory in engines:
        try:
            engine = factory()
        except ImportError as error:
            print(f"usearch: not installed ({error})")
            break
        r = measure(engine, corpus, tenth_best)
        rows.append(
            f"| {r['engine']} | {r['build_s']:.1f} s | {r['memory_mb']:.0f} MB "
            f"| {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['recall']:.3f} "
            f"| {r['add_s'] * 1e3:.0f} ms | {r['delete_s'] * 1e3:.0f} ms |"
        )
        print(rows[-1], flush=True)
    print()
    print(header)
    print("| --- |" + " ---: |" * 7)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
