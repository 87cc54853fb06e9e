"""The record vocabulary shared by journals, snapshots and export files.

Every change to the store is one record, a JSON object with a ``"kind"``. The
embedded backend appends these to its journal and replays them at start-up;
both backends emit the state-describing kinds from ``export`` and accept them
in ``import``. Applying a record is idempotent (putting what is already there
changes nothing, taking what is gone is a no-op), which lets a snapshot be
written while the store keeps changing: replaying the journal written since
the snapshot began converges on the same state.

State kinds (in exports, in snapshots, in journals)::

    chat            id, title, created_at, updated_at
    message         chat_id, id, role, content, created_at, status, sources?, knowledge_error?
    fact            id, text, metadata, created_at
    fact_vectors    model, vectors: {fact id: base64 of the embedding}
    operation       operation: {...}
    checkpoint      operation_id, checkpoint: {...}
    agent           agent
    inbox_message   agent, id, priority, body, created_at, seq

Change kinds (journals only)::

    chat_deleted        id
    fact_deleted        id
    checkpoint_deleted  operation_id
    inbox_taken         agent, ids
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .._errors import BadRequest
from ._models import InboxMessage

__all__ = ["EXPORT_KINDS", "checked_import", "inbox_record", "iso_to_ms"]

EXPORT_KINDS = frozenset(
    {
        "chat",
        "message",
        "fact",
        "fact_vectors",
        "operation",
        "checkpoint",
        "agent",
        "inbox_message",
    }
)


def iso_to_ms(iso: str) -> int:
    """``2026-11-23T04:38:45.123Z`` → epoch milliseconds."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def checked_import(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` as a list, once each is known to be of a kind an import accepts."""
    batch = list(records)
    for number, record in enumerate(batch, 1):
        if record.get("kind") not in EXPORT_KINDS:
            raise BadRequest(f"record {number} has an unknown kind: {record.get('kind')!r}")
    return batch


def inbox_record(agent: str, message: InboxMessage, seq: int) -> dict[str, Any]:
    """The ``inbox_message`` record of a message waiting in ``agent``'s inbox."""
    return {
        "kind": "inbox_message",
        "agent": agent,
        "id": message.id,
        "priority": message.priority.name.lower(),
        "body": message.body,
        "created_at": message.created_at,
        "seq": seq,
    }
