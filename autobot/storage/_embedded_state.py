"""The embedded store's in-memory state, changed only by applying records.

Pure data structures with no I/O and no awaits: every ``apply`` is atomic with
respect to other Trio tasks, which is what keeps concurrent writers from
interleaving. Reads copy what they return.

Chats live in one insertion-ordered dict that an append moves to the end, so
"newest first" is a reversed walk that stops after ``limit`` entries, whatever
the number of chats.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ._models import Chat, Fact, InboxMessage, Message, Priority
from ._records import inbox_record

__all__ = ["EmbeddedState"]

# Embeddings per fact_vectors record of a snapshot or export.
_VECTORS_PER_RECORD = 256


@dataclass(slots=True)
class _ChatEntry:
    id: str
    title: str
    created_at: str
    updated_at: str
    messages: list[Message] = field(default_factory=list)
    # Message ids, built only while replaying (to skip records a snapshot already holds).
    replay_ids: set[str] | None = None

    def chat(self) -> Chat:
        return Chat(self.id, self.title, self.created_at, self.updated_at, len(self.messages))


@dataclass(slots=True)
class _Inbox:
    heap: list[tuple[int, int, str]] = field(default_factory=list)  # (-priority, seq, id)
    waiting: dict[str, tuple[int, InboxMessage]] = field(default_factory=dict)  # id → (seq, msg)
    # Ids with an entry in the heap, taken or not: a message handed back while
    # its old entry is still there reuses it rather than being listed twice.
    in_heap: set[str] = field(default_factory=set)


class EmbeddedState:
    def __init__(self) -> None:
        self.chats: dict[str, _ChatEntry] = {}
        self.facts: dict[str, Fact] = {}
        #: model → fact id → embedding (base64 of the caller's bytes, as journalled).
        self.fact_vectors: dict[str, dict[str, str]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.agents: set[str] = set()
        self.inboxes: dict[str, _Inbox] = {}
        self.inbox_seq = 0
        self.replaying = False

    # -- applying records -----------------------------------------------------------

    def apply(self, record: dict[str, Any]) -> bool:
        """Apply one record; False when it changed nothing (missing target, or a repeat)."""
        return getattr(self, "_apply_" + record["kind"])(record)

    def _apply_chat(self, record: dict[str, Any]) -> bool:
        if record["id"] in self.chats:
            return False
        self.chats[record["id"]] = _ChatEntry(
            record["id"], record["title"], record["created_at"], record["updated_at"]
        )
        return True

    def _apply_chat_deleted(self, record: dict[str, Any]) -> bool:
        return self.chats.pop(record["id"], None) is not None

    def _apply_message(self, record: dict[str, Any]) -> bool:
        entry = self.chats.get(record["chat_id"])
        if entry is None:
            return False
        if self.replaying:
            if entry.replay_ids is None:
                entry.replay_ids = {message.id for message in entry.messages}
            if record["id"] in entry.replay_ids:
                return False
            entry.replay_ids.add(record["id"])
        entry.messages.append(Message.from_json(record))
        entry.updated_at = record["created_at"]
        # Moving to the end keeps the dict ordered by last update.
        del self.chats[entry.id]
        self.chats[entry.id] = entry
        return True

    def _apply_fact(self, record: dict[str, Any]) -> bool:
        self.facts[record["id"]] = Fact(
            record["id"], record["text"], record.get("metadata") or {}, record["created_at"]
        )
        return True

    def _apply_fact_deleted(self, record: dict[str, Any]) -> bool:
        for vectors in self.fact_vectors.values():
            vectors.pop(record["id"], None)
        return self.facts.pop(record["id"], None) is not None

    def _apply_fact_vectors(self, record: dict[str, Any]) -> bool:
        present = {k: v for k, v in record["vectors"].items() if k in self.facts}
        self.fact_vectors.setdefault(record["model"], {}).update(present)
        return bool(present)

    def _apply_operation(self, record: dict[str, Any]) -> bool:
        self.operations[record["operation"]["id"]] = record["operation"]
        return True

    def _apply_checkpoint(self, record: dict[str, Any]) -> bool:
        self.checkpoints[record["operation_id"]] = record["checkpoint"]
        return True

    def _apply_checkpoint_deleted(self, record: dict[str, Any]) -> bool:
        return self.checkpoints.pop(record["operation_id"], None) is not None

    def _apply_agent(self, record: dict[str, Any]) -> bool:
        if record["agent"] in self.agents:
            return False
        self.agents.add(record["agent"])
        return True

    def _apply_inbox_message(self, record: dict[str, Any]) -> bool:
        self.agents.add(record["agent"])
        inbox = self.inboxes.setdefault(record["agent"], _Inbox())
        if record["id"] in inbox.waiting:
            return False
        priority = Priority[record["priority"].upper()]
        seq = record["seq"]
        self.inbox_seq = max(self.inbox_seq, seq)
        message = InboxMessage(record["id"], priority, record["body"], record["created_at"], seq)
        inbox.waiting[record["id"]] = (seq, message)
        if record["id"] not in inbox.in_heap:
            inbox.in_heap.add(record["id"])
            heapq.heappush(inbox.heap, (-priority, seq, record["id"]))
        return True

    def _apply_inbox_taken(self, record: dict[str, Any]) -> bool:
        inbox = self.inboxes.get(record["agent"])
        if inbox is None:
            return False
        taken = [inbox.waiting.pop(message_id, None) for message_id in record["ids"]]
        return any(taken)

    def finish_replay(self) -> None:
        self.replaying = False
        for entry in self.chats.values():
            entry.replay_ids = None

    # -- reading ------------------------------------------------------------------------

    def list_chats(self, limit: int, offset: int) -> list[Chat]:
        newest_first = reversed(self.chats.values())
        return [entry.chat() for entry in islice(newest_first, offset, offset + limit)]

    def peek_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        """The next ``max_count`` messages in delivery order, without taking them."""
        inbox = self.inboxes.get(agent)
        if inbox is None:
            return []
        # Drop heap entries whose message was already taken.
        while inbox.heap and inbox.heap[0][2] not in inbox.waiting:
            inbox.in_heap.discard(heapq.heappop(inbox.heap)[2])
        ids = [
            entry[2]
            for entry in heapq.nsmallest(max_count, inbox.heap)
            if entry[2] in inbox.waiting
        ]
        return [inbox.waiting[message_id][1] for message_id in ids]

    # -- exporting ---------------------------------------------------------------------

    def records(self) -> Iterator[dict[str, Any]]:
        """Records that rebuild this state, oldest-updated chat first.

        Safe to consume across checkpoints while the state changes: it walks
        copies, and any change it misses is in the journal written meanwhile.
        """
        for agent in sorted(self.agents):
            yield {"kind": "agent", "agent": agent}
        for entry in list(self.chats.values()):
            yield {
                "kind": "chat",
                "id": entry.id,
                "title": entry.title,
                "created_at": entry.created_at,
                "updated_at": entry.updated_at,
            }
            for message in list(entry.messages):
                yield {"kind": "message", "chat_id": entry.id, **message.to_json()}
        for fact in list(self.facts.values()):
            yield {"kind": "fact", **fact.to_json()}
        for model, vectors in list(self.fact_vectors.items()):
            items = list(vectors.items())
            for start in range(0, len(items), _VECTORS_PER_RECORD):
                chunk = dict(items[start : start + _VECTORS_PER_RECORD])
                yield {"kind": "fact_vectors", "model": model, "vectors": chunk}
        for operation in list(self.operations.values()):
            yield {"kind": "operation", "operation": operation}
        for operation_id, checkpoint in list(self.checkpoints.items()):
            yield {"kind": "checkpoint", "operation_id": operation_id, "checkpoint": checkpoint}
        for agent, inbox in list(self.inboxes.items()):
            for seq, message in list(inbox.waiting.values()):
                yield inbox_record(agent, message, seq)
