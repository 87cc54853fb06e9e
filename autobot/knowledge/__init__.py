"""The knowledge base: facts, and the indexes that search them."""

import importlib
from typing import Any

from ._base import MAX_LIMIT, MODES, WATCH_S, KnowledgeBase, SearchHit, SearchMode, SearchResults
from ._cpu import CPU_THREADS, cpu_limiter, run_cpu
from ._crawl import Crawler, CrawlFailed
from ._fusion import RRF_K, reciprocal_rank_fusion
from ._keyword import MARKER, KeywordIndex, KeywordIndexUnusable
from ._limits import MAX_BATCH, MAX_METADATA_BYTES, MAX_TEXT_CHARS, NewFact
from ._url_guard import MAX_URL_CHARS, AddressPolicy, check_url

# Imported when first used: they bring numpy, which only semantic search needs.
_LAZY = {
    "EMBED_BATCH": "._embeddings",
    "Embedder": "._embeddings",
    "EmbeddingSource": "._embeddings",
    "DimensionMismatch": "._vectors",
    "VectorIndex": "._vectors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CPU_THREADS",
    "EMBED_BATCH",
    "MARKER",
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_URL_CHARS",
    "MODES",
    "RRF_K",
    "WATCH_S",
    "AddressPolicy",
    "CrawlFailed",
    "Crawler",
    "DimensionMismatch",
    "Embedder",
    "EmbeddingSource",
    "KeywordIndex",
    "KeywordIndexUnusable",
    "KnowledgeBase",
    "NewFact",
    "SearchHit",
    "SearchMode",
    "SearchResults",
    "VectorIndex",
    "check_url",
    "cpu_limiter",
    "reciprocal_rank_fusion",
    "run_cpu",
]
