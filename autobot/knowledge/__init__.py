"""The knowledge base: facts, and the indexes that search them."""

from ._base import MAX_LIMIT, WATCH_S, KnowledgeBase, SearchHit
from ._keyword import KEYWORD_THREADS, MARKER, KeywordIndex, KeywordIndexUnusable
from ._limits import MAX_BATCH, MAX_METADATA_BYTES, MAX_TEXT_CHARS, NewFact

__all__ = [
    "KEYWORD_THREADS",
    "MARKER",
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "WATCH_S",
    "KeywordIndex",
    "KeywordIndexUnusable",
    "KnowledgeBase",
    "NewFact",
    "SearchHit",
]
