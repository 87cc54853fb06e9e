"""Storage and messaging: one interface, an embedded backend and a Redis backend."""

import importlib
from typing import Any

from ._answer_progress import AnswerProgress
from ._embedded import EmbeddedStore, open_embedded_store
from ._fact_log import FactChange
from ._interface import Store
from ._models import (
    Chat,
    Fact,
    InboxMessage,
    Message,
    Priority,
    chat_not_found,
    fact_not_found,
    new_id,
    now,
)
from ._open import open_store, store_directory, store_is_critical

# The Redis backend is imported when first used: the embedded default never needs it.
_LAZY = {"RedisStore": "._redis_store", "open_redis_store": "._redis_store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnswerProgress",
    "Chat",
    "EmbeddedStore",
    "Fact",
    "FactChange",
    "InboxMessage",
    "Message",
    "Priority",
    "RedisStore",
    "Store",
    "chat_not_found",
    "fact_not_found",
    "new_id",
    "now",
    "open_embedded_store",
    "open_redis_store",
    "open_store",
    "store_directory",
    "store_is_critical",
]
