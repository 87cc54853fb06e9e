"""Knowledge base keyword search: Tantivy against SQLite FTS5 and bm25s, in one run.

A corpus of English-like facts (a few sentences each) is generated from a
fixed seed: a Zipf-ranked vocabulary of function words, 5,000 synthetic
content stems with inflections (``-s``, ``-ed``, ``-ing``, ``-er``) and some
technical terms (``utf-8``, ``x86_64``, ``http2``). Each engine then does the
same work on an index on disk:

* build: index every fact and commit;
* add: 1,000 more facts, committed and visible to a new search;
* delete: 1,000 facts by id, committed and gone from search;
* query latency p50/p99 over 500 queries of 1 to 3 content words, limit 10;
* size of the index on disk;
* relevance: 50 planted facts each hold three rare words (in the plural) that
  no other fact holds together; a query of the three words (singular) should
  rank the planted fact first.

Tantivy uses the ``en_stem`` tokenizer, FTS5 ``porter unicode61`` with
``bm25()``, bm25s PyStemmer's English stemmer (bm25s has no incremental
update: add and delete are a rebuild and save of the whole index). Queries
are disjunctions (any word) in every engine, ranked by BM25.

    .venv/bin/python bench/kb_search_bench.py [--facts 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def split_words(text: str) -> list[str]:
    return text.split()


FUNCTION_WORDS = split_words(
    "the of and to a in is that for it as was with be by on not he this are or his"
    " from at which but have an they you were her she there been one all we their"
    " has would when if so no will can more other its into than then some could"
    " them these two may only new also time very about after first"
)
TECHNICAL = split_words(
    "utf-8 x86_64 http2 tcp/ip json-rpc ipv6 sha256 postgres redis kubernetes"
    " api gateway latency throughput cache shard replica mutex semaphore"
    " coroutine websocket tls certificate checksum"
)
ONSETS = split_words("b c d f g h j k l m n p r t v w z br cr dr fl gr pl pr st tr th sh ch")
VOWELS = split_words("a e i o u ai ea oo ou")
CODAS = split_words("n r l m t d k p x nd nt rk lt")
SUFFIXES = ("s", "ed", "ing", "er")
STEMS = 5_000
ADDS = 1_000
DELETES = 1_000
PLANTED = 50
LIMIT = 10
WORD = re.compile(r"\w+")


def synthetic_stems(rng: random.Random, count: int) -> list[str]:
    stems: list[str] = []
    seen: set[str] = set(FUNCTION_WORDS)
    while len(stems) < count:
        syllables = rng.choice((1, 2, 2, 3))
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables))
        word += rng.choice(CODAS)
        if word not in seen:
            seen.add(word)
            stems.append(word)
    return stems


class Corpus:
    """Facts, planted facts and queries, all from one seed."""

    def __init__(self, facts: int, queries: int, seed: int = 11) -> None:
        rng = random.Random(seed)
        self.stems = synthetic_stems(rng, STEMS)
        self.vocabulary = FUNCTION_WORDS + self.stems
        weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(self.vocabulary))]
        self.cumulative = list(itertools.accumulate(weights))
        self.rng = rng
        self.texts = [self.fact_text() for _ in range(facts + ADDS)]
        self.ids = [f"f{n:07d}" for n in range(len(self.texts))]
        self.planted = self.plant()
        content = len(FUNCTION_WORDS) + 50
        self.queries = [
            " ".join(self.vocabulary[self.content_rank(content)] for _ in range(rng.randint(1, 3)))
            for _ in range(queries)
        ]

    def content_rank(self, lowest: int) -> int:
        while True:
            rank = bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])
            if lowest <= rank < len(self.vocabulary):
                return rank

    def word(self) -> str:
        if self.rng.random() < 0.02:
            return self.rng.choice(TECHNICAL)
        rank = bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])
        word = self.vocabulary[min(rank, len(self.vocabulary) - 1)]
        if rank >= len(FUNCTION_WORDS) and self.rng.random() < 0.3:
            word += self.rng.choice(SUFFIXES)
        return word

    def fact_text(self) -> str:
        sentences = []
        for _ in range(self.rng.randint(2, 4)):
            words = [self.word() for _ in range(self.rng.randint(6, 14))]
            sentences.append(" ".join(words).capitalize() + ".")
        return " ".join(sentences)

    def plant(self) -> list[tuple[int, str]]:
        """Replace 50 facts with ones holding three rare stems; return (index, query)."""
        rare = self.stems[-1500:]
        forms = {stem + suffix: stem for stem in rare for suffix in ("", *SUFFIXES)}
        holders: dict[str, set[int]] = {stem: set() for stem in rare}
        for n, text in enumerate(self.texts):
            for token in WORD.findall(text.lower()):
                if token in forms:
                    holders[forms[token]].add(n)
        planted = []
        positions = self.rng.sample(range(len(self.texts) - ADDS), PLANTED)
        for position in positions:
            while True:
                words = self.rng.sample(rare, 3)
                if not set.intersection(*(holders[w] for w in words)):
                    break
            filler = self.fact_text()
            self.texts[position] = f"{filler} The {words[0]}s and {words[1]}s met {words[2]}s."
            planted.append((position, " ".join(words)))
        return planted


def words_of(query: str) -> list[str]:
    return WORD.findall(query.lower())


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Tantivy:
    name = "tantivy (en_stem)"

    def __init__(self, path: Path) -> None:
        import tantivy

        self.tantivy = tantivy
        path.mkdir()
        self.path = path
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=True, tokenizer_name="raw")
        builder.add_text_field("text", tokenizer_name="en_stem")
        self.index = tantivy.Index(builder.build(), path=str(path))
        self.writer = self.index.writer(heap_size=128_000_000)

    def add(self, ids: list[str], texts: list[str]) -> None:
        for fact_id, text in zip(ids, texts, strict=True):
            self.writer.add_document(self.tantivy.Document(id=fact_id, text=text))
        self.writer.commit()
        self.index.reload()

    def delete(self, ids: list[str]) -> None:
        for fact_id in ids:
            self.writer.delete_documents_by_term("id", fact_id)
        self.writer.commit()
        self.index.reload()

    def search(self, query: str) -> list[str]:
        parsed, _errors = self.index.parse_query_lenient(" ".join(words_of(query)), ["text"])
        searcher = self.index.searcher()
        hits = searcher.search(parsed, LIMIT).hits
        return [searcher.doc(address)["id"][0] for _score, address in hits]

    def size(self) -> int:
        self.writer.garbage_collect_files()
        return dir_size(self.path)


class Fts5:
    name = "SQLite FTS5 (porter)"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE VIRTUAL TABLE facts USING fts5(text, tokenize='porter unicode61')")
        self.db.execute("CREATE TABLE ids (fact_id TEXT PRIMARY KEY, doc INTEGER UNIQUE)")
        self.next_doc = 1

    def add(self, ids: list[str], texts: list[str]) -> None:
        self.db.execute("BEGIN")
        for fact_id, text in zip(ids, texts, strict=True):
            self.db.execute("INSERT INTO facts(rowid, text) VALUES (?, ?)", (self.next_doc, text))
            self.db.execute("INSERT INTO ids VALUES (?, ?)", (fact_id, self.next_doc))
            self.next_doc += 1
        self.db.execute("COMMIT")

    def delete(self, ids: list[str]) -> None:
        self.db.execute("BEGIN")
        for fact_id in ids:
            (doc,) = self.db.execute("SELECT doc FROM ids WHERE fact_id = ?", (fact_id,)).fetchone()
            self.db.execute("DELETE FROM facts WHERE rowid = ?", (doc,))
            self.db.execute("DELETE FROM ids WHERE doc = ?", (doc,))
        self.db.execute("COMMIT")

    def search(self, query: str) -> list[str]:
        match = " OR ".join(f'"{w}"' for w in words_of(query))
        rows = self.db.execute(
            "SELECT ids.fact_id FROM facts JOIN ids ON ids.doc = facts.rowid"
            " WHERE facts MATCH ? ORDER BY bm25(facts) LIMIT ?",
            (match, LIMIT),
        ).fetchall()
        return [row[0] for row in rows]

    def size(self) -> int:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return dir_size(self.path)


class Bm25s:
    name = "bm25s (rebuild)"

    def __init__(self, path: Path) -> None:
        import bm25s
        import Stemmer

        self.bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.path = path
        self.ids: list[str] = []
        self.texts: list[str] = []

    def rebuild(self) -> None:
        tokens = self.bm25s.tokenize(
            self.texts, stopwords="en", stemmer=self.stemmer, show_progress=False
        )
        self.retriever = self.bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)
        self.retriever.save(str(self.path))

    def add(self, ids: list[str], texts: list[str]) -> None:
        self.ids += ids
        self.texts += texts
        self.rebuild()

    def delete(self, ids: list[str]) -> None:
        gone = set(ids)
        kept = [(i, t) for i, t in zip(self.ids, self.texts, strict=True) if i not in gone]
        self.ids = [i for i, _ in kept]
        self.texts = [t for _, t in kept]
        self.rebuild()

    def search(self, query: str) -> list[str]:
        tokens = self.bm25s.tokenize(
            [query], stopwords="en", stemmer=self.stemmer, show_progress=False
        )
        if not tokens.vocab:
            return []
        k = min(LIMIT, len(self.ids))
        docs, _scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [self.ids[d] for d in docs[0]]

    def size(self) -> int:
        return dir_size(self.path)


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(engine: Any, corpus: Corpus, facts: int) -> dict[str, Any]:
    ids, texts = corpus.ids, corpus.texts
    result: dict[str, Any] = {"engine": engine.name}
    result["build_s"] = timed(lambda: engine.add(ids[:facts], texts[:facts]))
    result["size_mb"] = engine.size() / 1e6
    ranked_first = 0
    for position, query in corpus.planted:
        found = engine.search(query)
        ranked_first += bool(found) and found[0] == ids[position]
    result["relevance"] = f"{ranked_first}/{len(corpus.planted)}"
    latencies = []
    for query in corpus.queries:
        start = time.perf_counter()
        engine.search(query)
        latencies.append(time.perf_counter() - start)
    result["p50_ms"] = statistics.median(latencies) * 1e3
    result["p99_ms"] = percentile(latencies, 0.99) * 1e3
    result["add_s"] = timed(lambda: engine.add(ids[facts:], texts[facts:]))
    probe_position, probe_query = corpus.planted[0]
    assert ids[probe_position] in engine.search(probe_query)
    planted_ids = {ids[p] for p, _ in corpus.planted}
    doomed = [i for i in ids[:facts] if i not in planted_ids][: DELETES - 1]
    doomed.append(ids[probe_position])
    result["delete_s"] = timed(lambda: engine.delete(doomed))
    assert ids[probe_position] not in engine.search(probe_query)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = Corpus(args.facts, args.queries)
    words = sum(len(t.split()) for t in corpus.texts) / len(corpus.texts)
    print(
        f"corpus: {args.facts:,} facts (+{ADDS:,} added), {words:.0f} words a fact,"
        f" generated in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for factory, where in ((Tantivy, "tantivy"), (Fts5, "fts5.db"), (Bm25s, "bm25s")):
            try:
                engine = factory(Path(tmp) / where)
            except ImportError as error:
                print(f"{factory.name}: not installed ({error})")
                continue
            results.append(measure(engine, corpus, args.facts))
            del engine
            shutil.rmtree(Path(tmp) / where, ignore_errors=True)
    header = "| engine | build s | add 1k s | delete 1k s | p50 ms | p99 ms | size MB | first |"
    print(header)
    print("|" + " --- |" * 8)
    for r in results:
        print(
            f"| {r['engine']} | {r['build_s']:.1f} | {r['add_s']:.2f} | {r['delete_s']:.2f}"
            f" | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['size_mb']:.1f} | {r['relevance']} |"
        )
    base = results[0]
    for r in results[1:]:
        print(
            f"{r['engine']} / {base['engine']}: p50 {r['p50_ms'] / base['p50_ms']:.1f}x,"
            f" add {r['add_s'] / base['add_s']:.1f}x, size {r['size_mb'] / base['size_mb']:.1f}x"
        )


if __name__ == "__main__":
    main()
