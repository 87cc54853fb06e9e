"""The knowledge base: facts, and the indexes that search them."""

from ._keyword import KEYWORD_THREADS, MARKER, KeywordIndex, KeywordIndexUnusable

__all__ = ["KEYWORD_THREADS", "MARKER", "KeywordIndex", "KeywordIndexUnusable"]
