"""The knowledge base through the HTTP API of a real server: inserts, search, search under load.

The server is ``run.py`` (Hypercorn, a separate process) on a fresh data
directory, on the embedded store or, with ``--redis``, on a redis-server
started here. The facts are 12 words each from a 5,000-word vocabulary
(Zipf-ranked, fixed seed). Measured, in one run:

* insert rate: ``--facts`` facts through ``POST /api/knowledge/facts/batch``
  (1,000 a batch, 4 clients at once), then 2,000 single ``POST
  /api/knowledge/facts`` by 20 clients;
* the keyword index's size on disk, and the server's resident memory before
  and after the inserts;
* keyword search p50/p99 over ``--queries`` queries of 1 to 3 words, one at a
  time, through ``GET /api/knowledge/search``;
* the same while 20 clients keep adding facts, and the add rate meanwhile;
* how long a fact added on one server takes to be found on another (``--redis``
  only: a second server on the same Redis);
* with ``--embed``: the fake LLM of the tests (in this process) serves
  256-dimension embeddings, and once every fact is embedded, semantic and
  hybrid search p50/p99 through the API (each query embedded by the fake:
  that round trip is part of the time), and how long embedding all took.

    .venv/bin/python bench/kb_api_bench.py [--facts 100000] [--queries 1000] [--redis] [--embed]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_llm import serve_fake_llm
from tests.support.polling import eventually
from tests.support.process import run_server
from tests.support.redis_server import RedisProcesses


def words_of(text: str) -> list[str]:
    return text.split()


BATCH = 1000
BATCH_CLIENTS = 4
SINGLE_ADDS = 2000
LOAD_CLIENTS = 20
VOCABULARY = 5000
WORDS_PER_FACT = 12
ONSETS = words_of("b c d f g h j k l m n p r s t v w z br cr dr fl gr pl pr st tr th sh ch")
VOWELS = words_of("a e i o u ai ea oo ou")
CODAS = words_of("b d g k l m n p r s t x nd nt rk st ng")


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        syllables = rng.choice((1, 2, 2, 3))
        words.add(
            "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables))
            + rng.choice(CODAS)
        )
    return sorted(words)


class Corpus:
    """Facts and queries drawn from one Zipf-ranked vocabulary."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.weights = [1 / (rank + 1) ** 0.9 for rank in range(len(self.words))]

    def fact(self) -> str:
        return " ".join(self.rng.choices(self.words, self.weights, k=WORDS_PER_FACT))

    def query(self) -> str:
        # Query words from the middle of the ranks: neither stop-word-like nor unseen.
        return " ".join(self.rng.choice(self.words[50:2000]) for _ in range(self.rng.randint(1, 3)))


def percentiles(samples: Sequence[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_bytes(data_dir: Path) -> int:
    return sum(
        path.stat().st_size
        for directory in (data_dir / "knowledge").glob("keyword-*")
        for path in directory.rglob("*")
        if path.is_file()
    )


async def insert_batches(client: httpx.AsyncClient, corpus: Corpus, facts: int) -> float:
    batches = [
        [{"text": corpus.fact()} for _ in range(min(BATCH, facts - start))]
        for start in range(0, facts, BATCH)
    ]
    queue = iter(batches)

    async def worker() -> None:
        for batch in queue:
            response = await client.post("/api/knowledge/facts/batch", json={"facts": batch})
            assert response.status_code == 201, response.text

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(BATCH_CLIENTS):
            nursery.start_soon(worker)
    return facts / (time.perf_counter() - started)


async def add_one(client: httpx.AsyncClient, text: str) -> None:
    response = await client.post("/api/knowledge/facts", json={"text": text})
    assert response.status_code == 201, response.text


async def insert_singles(client: httpx.AsyncClient, corpus: Corpus) -> float:
    texts = iter([corpus.fact() for _ in range(SINGLE_ADDS)])

    async def worker() -> None:
        for text in texts:
            await add_one(client, text)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(LOAD_CLIENTS):
            nursery.start_soon(worker)
    return SINGLE_ADDS / (time.perf_counter() - started)


async def search_latencies(
    client: httpx.AsyncClient, queries: Sequence[str], mode: str = "keyword"
) -> list[float]:
    taken = []
    for query in queries:
        started = time.perf_counter()
        response = await client.get(
            "/api/knowledge/search", params={"q": query, "limit": 10, "mode": mode}
        )
        taken.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return taken


async def search_under_load(
    client: httpx.AsyncClient, corpus: Corpus, queries: Sequence[str]
) -> tuple[list[float], float]:
    added = 0
    texts = [corpus.fact() for _ in range(5000)]

    async def adder(offset: int) -> None:
        nonlocal added
        n = offset
        while True:
            await add_one(client, texts[n % len(texts)])
            added += 1
            n += LOAD_CLIENTS

    async with trio.open_nursery() as nursery:
        for offset in range(LOAD_CLIENTS):
            nursery.start_soon(adder, offset)
        await trio.sleep(0.5)  # the adders under way
        started, before = time.perf_counter(), added
        taken = await search_latencies(client, queries)
        rate = (added - before) / (time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return taken, rate


async def knowledge_ready(client: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        return (await client.get("/api/health")).json()["checks"]["knowledge"]["ok"] is True

    with trio.fail_after(120):
        await eventually(ready, interval_s=0.05)


async def propagation(one: httpx.AsyncClient, other: httpx.AsyncClient, rounds: int) -> list[float]:
    taken = []
    for n in range(rounds):
        word = f"zqpropagation{n}x"
        started = time.perf_counter()
        await add_one(one, f"marker {word}")
        while True:
            response = await other.get("/api/knowledge/search", params={"q": word})
            if response.json()["results"]:
                break
            await trio.sleep(0.001)
        taken.append(time.perf_counter() - started)
    return taken


async def all_embedded(client: httpx.AsyncClient) -> None:
    async def done() -> bool:
        check = (await client.get("/api/health")).json()["checks"]["knowledge"]
        semantic = check.get("semantic") or {}
        return semantic.get("vectors") == check["facts"] and semantic.get("waiting") == 0

    with trio.fail_after(1800):
        await eventually(done, interval_s=0.5)


async def bench(args: argparse.Namespace, work: Path) -> None:
    async with trio.open_nursery() as nursery:
        llm_url = "http://127.0.0.1:9"
        if args.embed:
            fake = await nursery.start(
                lambda task_status: serve_fake_llm(keep_records=False, task_status=task_status)
            )
            llm_url = fake.ollama_url
        await measure(args, work, llm_url)
        nursery.cancel_scope.cancel()


async def measure(args: argparse.Namespace, work: Path, llm_url: str) -> None:
    corpus = Corpus()
    environ = {"AUTOBOT_DATA_DIR": str(work / "data"), "AUTOBOT_LLM_URL": llm_url}
    if args.embed:
        environ["AUTOBOT_EMBED_MODEL"] = "fake-embed"
    redis = None
    if args.redis:
        redis = RedisProcesses(work / "redis").redis()
        environ["AUTOBOT_REDIS_URL"] = redis.url
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    try:
        async with run_server(environ) as server:
            pid = server.process.pid
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                await knowledge_ready(client)
                rss_before = rss_mib(pid)
                batch_rate = await insert_batches(client, corpus, args.facts)
                single_rate = await insert_singles(client, corpus)
                await knowledge_ready(client)
                rss_after = rss_mib(pid)
                size = index_bytes(work / "data")
                queries = [corpus.query() for _ in range(args.queries)]
                await search_latencies(client, queries[:50])  # warm
                quiet = await search_latencies(client, queries)
                loaded, load_rate = await search_under_load(client, corpus, queries[:500])
                semantic = hybrid = None
                if args.embed:
                    started = time.perf_counter()
                    await all_embedded(client)
                    embed_wait = time.perf_counter() - started
                    semantic = await search_latencies(client, queries[:300], "semantic")
                    hybrid = await search_latencies(client, queries[:300], "hybrid")
                spread = None
                if args.redis:
                    async with (
                        run_server(environ) as second,
                        httpx.AsyncClient(base_url=second.url, timeout=60) as other,
                    ):
                        await knowledge_ready(other)
                        spread = await propagation(client, other, 50)
    finally:
        if redis is not None:
            redis.stop()

    store = "Redis" if args.redis else "embedded"
    facts = args.facts + SINGLE_ADDS
    print(
        f"\n{facts:,} facts of {WORDS_PER_FACT} words ({VOCABULARY:,}-word vocabulary), {store}\n"
    )
    print("| measure | result |")
    print("| --- | --- |")
    print(
        f"| batch insert ({BATCH:,} a batch, {BATCH_CLIENTS} clients) | {batch_rate:,.0f} facts/s |"
    )
    print(f"| single insert ({LOAD_CLIENTS} clients) | {single_rate:,.0f} facts/s |")
    print(f"| keyword index on disk | {size / 2**20:.1f} MiB |")
    print(f"| server RSS before → after inserts | {rss_before:.0f} → {rss_after:.0f} MiB |")
    print(f"| keyword search, one at a time | {percentiles(quiet)} |")
    print(
        f"| keyword search while {LOAD_CLIENTS} clients add | {percentiles(loaded)} "
        f"({load_rate:,.0f} adds/s meanwhile) |"
    )
    if semantic is not None and hybrid is not None:
        print(f"| embedding the rest after the inserts ended | {embed_wait:.0f} s |")
        print(f"| semantic search (256 dimensions) | {percentiles(semantic)} |")
        print(f"| hybrid search | {percentiles(hybrid)} |")
    if spread is not None:
        print(f"| added on one server → found on another | {percentiles(spread)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--redis", action="store_true", help="run on a redis-server")
    parser.add_argument("--embed", action="store_true", help="embeddings from the fake LLM")
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        trio.run(bench, args, Path(work))


if __name__ == "__main__":
    main()
