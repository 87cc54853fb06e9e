"""The records the store keeps, and the small helpers that make them.

Records are frozen dataclasses: what a caller gets back cannot change under it
when the store is updated. ``to_json()`` gives the API's field names; the same
dicts are what both backends persist and what ``export``/``import`` move.
"""

from __future__ import annotations

import enum
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._errors import NotFound, echo

__all__ = [
    "UNFINISHED_OPERATION_STATUSES",
    "Chat",
    "Fact",
    "InboxMessage",
    "Message",
    "Priority",
    "chat_not_found",
    "fact_not_found",
    "new_id",
    "now",
]


def new_id() -> str:
    """An opaque, unique identifier."""
    return uuid.uuid4().hex


def now() -> tuple[str, int]:
    """The current UTC time as the contract's ISO 8601 string and as epoch milliseconds."""
    epoch_ms = time.time_ns() // 1_000_000
    iso = datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return iso.replace("+00:00", "Z"), epoch_ms


#: Operation statuses the store indexes, for ``list_operations(unfinished_only=True)``.
UNFINISHED_OPERATION_STATUSES = frozenset({"queued", "running"})


def chat_not_found(chat_id: str) -> NotFound:
    return NotFound(f"no chat with id {echo(chat_id)}", code="chat_not_found")


def fact_not_found(fact_id: str) -> NotFound:
    return NotFound(f"no fact with id {echo(fact_id)}", code="fact_not_found")


class Priority(enum.IntEnum):
    """Agent message priorities; a higher value is delivered first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a chat.

    ``sources`` and ``knowledge_error`` belong to answers asked for with
    ``"knowledge": true`` only: the facts given to the model (``[{"id", "score"}]``,
    in the order given), and why there were none when the search failed. Other
    messages have ``None`` for both, and their JSON has neither key.
    """

    id: str
    role: str  # "user" or "assistant"
    content: str
    created_at: str
    status: str = "complete"  # assistant answers: "complete", "cancelled" or "failed"
    sources: list[dict[str, Any]] | None = None
    knowledge_error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
            "status": self.status,
        }
        if self.sources is not None:
            data["sources"] = [dict(source) for source in self.sources]
        if self.knowledge_error is not None:
            data["knowledge_error"] = dict(self.knowledge_error)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        # Roles and statuses repeat in every message: share one string object each.
        return cls(
            data["id"],
            sys.intern(data["role"]),
            data["content"],
            data["created_at"],
            sys.intern(data.get("status", "complete")),
            data.get("sources"),
            data.get("knowledge_error"),
        )


@dataclass(frozen=True, slots=True)
class Chat:
    id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Fact:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """One message waiting in an agent's inbox. ``body`` is the caller's JSON object.

    ``seq`` is its place in arrival order (unique per store): a message handed
    back with :meth:`~autobot.storage.Store.return_inbox` goes back to that
    place, ahead of every later arrival of its priority.
    """

    id: str
    priority: Priority
    body: dict[str, Any]
    created_at: str
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "priority": self.priority.name.lower(),
            "created_at": self.created_at,
            **self.body,
        }
