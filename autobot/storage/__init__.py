"""Storage and messaging: one interface, an embedded backend and a Redis backend."""

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
from ._redis_store import RedisStore, open_redis_store

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
