"""The knowledge base: facts, and the indexes that search them."""

from ._base import MAX_LIMIT, MODES, WATCH_S, KnowledgeBase, SearchHit, SearchMode, SearchResults
from ._crawl import Crawler, CrawlFailed
from ._keyword import KEYWORD_THREADS, MARKER, KeywordIndex, KeywordIndexUnusable
from ._limits import MAX_BATCH, MAX_METADATA_BYTES, MAX_TEXT_CHARS, NewFact
from ._url_guard import MAX_URL_CHARS, AddressPolicy, check_url

__all__ = [
    "KEYWORD_THREADS",
    "MARKER",
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_URL_CHARS",
    "MODES",
    "WATCH_S",
    "AddressPolicy",
    "CrawlFailed",
    "Crawler",
    "KeywordIndex",
    "KeywordIndexUnusable",
    "KnowledgeBase",
    "NewFact",
    "SearchHit",
    "SearchMode",
    "SearchResults",
    "check_url",
]
