"""The embedded backend: one process, state in memory, every change on disk first.

Reads come from memory. Writes become records that the :class:`Journal`
appends, fsyncs and only then applies, so anything a caller was told is stored
survives a crash. Blocking inbox receives and publish/subscribe are in-process
Trio primitives. Leases and agents' presence live in memory only: in a single
process a restart ends every lease anyway, and agents announce themselves again.

The journal's writer and its compaction run as supervised services
(``storage.journal``, critical: nothing is stored without it, and
``storage.compaction``) under the supervisor the store is opened with.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from .._deadlines import deadline
from .._errors import StorageUnavailable
from .._health import HealthCheck
from .._supervisor import Supervisor, using_supervisor
from ._answer_progress import AnswerProgress
from ._embedded_state import EmbeddedState
from ._fact_log import FactChange, FactOp, MemoryFactLog
from ._fanout import Fanout
from ._journal import COMPACT_AFTER_BYTES, Journal
from ._models import (
    UNFINISHED_OPERATION_STATUSES,
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
from ._records import checked_import, inbox_record

__all__ = ["EmbeddedStore", "open_embedded_store"]

# The records that are fact changes, and the change each one logs.
_LOGGED: dict[str, FactOp] = {"fact": "add", "fact_deleted": "delete", "fact_vectors": "vectors"}


class JournalCheck:
    """The ``journal`` entry of ``/api/health``: the last journal write succeeded.

    Critical: with the embedded store, a journal that cannot be written means
    nothing can be stored. It reads the state the writer keeps, so it costs
    nothing; the directory itself is probed by the ``storage`` check.
    """

    name = "journal"
    critical = True

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def check(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        if self._journal.failure:
            raise StorageUnavailable(f"the journal cannot be written: {self._journal.failure}")
        return {"generation": self._journal.generation}


class EmbeddedStore:
    """The :class:`~autobot.storage.Store` of one process; see :func:`open_embedded_store`."""

    backend = "embedded"

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._state = journal.state
        self._fanout = Fanout()
        self._leases: dict[str, tuple[str, float]] = {}
        self._live: dict[str, float] = {}  # agent → when its presence lapses (Trio clock)
        self._inbox_changed: dict[str, trio.Event] = {}
        self._fact_log = MemoryFactLog()
        self._answers: dict[str, tuple[str, list[str]]] = {}  # chat id → (answer id, tokens)
        self._inbox_locks: dict[str, trio.Lock] = {}
        journal.after_apply = self._after_apply

    @property
    def journal_failure(self) -> str | None:
        """Why the last journal write failed, until one succeeds again (for health)."""
        return self._journal.failure

    def health_checks(self) -> list[HealthCheck]:
        return [JournalCheck(self._journal)]

    def breakers(self) -> list[dict[str, Any]]:
        return []  # nothing remote to protect

    def _after_apply(self, records: list[dict[str, Any]], applied: list[bool]) -> None:
        for record, changed in zip(records, applied, strict=True):
            kind = record["kind"]
            if kind in _LOGGED and changed:
                if kind == "fact_vectors":
                    facts = self._state.facts
                    self._fact_log.append("vectors", [i for i in record["vectors"] if i in facts])
                else:
                    self._fact_log.append(_LOGGED[kind], [record["id"]])
            elif kind == "chat_deleted" and changed:
                self._answers.pop(record["id"], None)  # tells an answer streaming in it
            elif kind == "inbox_message":
                event = self._inbox_changed.pop(record["agent"], None)
                if event is not None:
                    event.set()

    async def _commit_one(self, record: dict[str, Any]) -> bool:
        (applied,) = await self._journal.commit([record])
        return applied

    # -- chats ------------------------------------------------------------------------

    async def create_chat(self, title: str | None = None) -> Chat:
        created_at, _ = now()
        record = {
            "kind": "chat",
            "id": new_id(),
            "title": title or "New chat",
            "created_at": created_at,
            "updated_at": created_at,
        }
        await self._commit_one(record)
        return Chat(record["id"], record["title"], created_at, created_at, 0)

    def _entry(self, chat_id: str) -> Any:
        entry = self._state.chats.get(chat_id)
        if entry is None:
            raise chat_not_found(chat_id)
        return entry

    async def get_chat(self, chat_id: str) -> Chat:
        await trio.lowlevel.checkpoint()
        return self._entry(chat_id).chat()

    async def list_chats(self, limit: int = 100, offset: int = 0) -> list[Chat]:
        await trio.lowlevel.checkpoint()
        return self._state.list_chats(limit, offset)

    async def delete_chat(self, chat_id: str) -> None:
        self._entry(chat_id)
        if not await self._commit_one({"kind": "chat_deleted", "id": chat_id}):
            raise chat_not_found(chat_id)

    async def append_message(
        self,
        chat_id: str,
        role: str,
        content: str,
        status: str = "complete",
        *,
        sources: list[dict[str, Any]] | None = None,
        knowledge_error: dict[str, Any] | None = None,
    ) -> Message:
        self._entry(chat_id)
        created_at, _ = now()
        message = Message(new_id(), role, content, created_at, status, sources, knowledge_error)
        if not await self._commit_one({"kind": "message", "chat_id": chat_id, **message.to_json()}):
            raise chat_not_found(chat_id)  # deleted while the append was being written
        return message

    async def get_messages(
        self, chat_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        await trio.lowlevel.checkpoint()
        return self._entry(chat_id).messages[start:stop]

    # -- knowledge facts ------------------------------------------------------------------

    async def put_fact(self, text: str, metadata: dict[str, Any] | None = None) -> Fact:
        created_at, _ = now()
        fact = Fact(new_id(), text, dict(metadata or {}), created_at)
        await self._commit_one({"kind": "fact", **fact.to_json()})
        return fact

    async def get_fact(self, fact_id: str) -> Fact:
        await trio.lowlevel.checkpoint()
        fact = self._state.facts.get(fact_id)
        if fact is None:
            raise fact_not_found(fact_id)
        return fact

    async def delete_fact(self, fact_id: str) -> None:
        if fact_id not in self._state.facts or not await self._commit_one(
            {"kind": "fact_deleted", "id": fact_id}
        ):
            raise fact_not_found(fact_id)

    async def list_facts(self) -> list[Fact]:
        await trio.lowlevel.checkpoint()
        return list(self._state.facts.values())

    async def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        await trio.lowlevel.checkpoint()
        facts = self._state.facts
        return {fact_id: facts[fact_id] for fact_id in fact_ids if fact_id in facts}

    async def fact_log_position(self) -> int:
        await trio.lowlevel.checkpoint()
        return self._fact_log.position

    async def read_fact_log(self, after: int, max_count: int = 1000) -> list[FactChange] | None:
        return await self._fact_log.read(after, max_count)

    async def put_fact_vectors(self, model: str, vectors: Mapping[str, bytes]) -> list[str]:
        present = {
            fact_id: base64.b64encode(vector).decode("ascii")
            for fact_id, vector in vectors.items()
            if fact_id in self._state.facts
        }
        if not present:
            await trio.lowlevel.checkpoint()
            return []
        await self._commit_one({"kind": "fact_vectors", "model": model, "vectors": present})
        return [fact_id for fact_id in present if fact_id in self._state.facts]

    async def get_fact_vectors(self, model: str, fact_ids: Sequence[str]) -> dict[str, bytes]:
        await trio.lowlevel.checkpoint()
        stored = self._state.fact_vectors.get(model, {})
        return {i: base64.b64decode(stored[i]) for i in fact_ids if i in stored}

    async def list_fact_vectors(self, model: str) -> dict[str, bytes]:
        await trio.lowlevel.checkpoint()
        stored = self._state.fact_vectors.get(model, {})
        return {fact_id: base64.b64decode(vector) for fact_id, vector in list(stored.items())}

    # -- answers in progress --------------------------------------------------------------

    async def begin_answer(self, chat_id: str, answer_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._answers[chat_id] = (answer_id, [])

    async def start_answer(
        self,
        chat_id: str,
        answer_id: str,
        content: str,
        *,
        lease: str,
        lease_ttl_s: float,
        history: int,
    ) -> tuple[Message, list[Message]] | None:
        self._entry(chat_id)
        if not await self.claim_lease(lease, answer_id, lease_ttl_s):
            return None
        try:
            message = await self.append_message(chat_id, "user", content)
        except BaseException:
            self._release(lease, answer_id)
            raise
        self._answers[chat_id] = (answer_id, [])
        return message, self._entry(chat_id).messages[-max(1, history) :]

    async def append_answer_tokens(
        self,
        chat_id: str,
        answer_id: str,
        first_seq: int,
        deltas: Sequence[str],
        channel: str,
        events: Sequence[dict[str, Any]],
    ) -> bool:
        await trio.lowlevel.checkpoint()
        entry = self._answers.get(chat_id)
        if entry is None or entry[0] != answer_id:
            return False
        if len(entry[1]) == first_seq - 1:
            entry[1].extend(deltas)
        for event in events:
            self._fanout.deliver(channel, event)
        return True

    async def answering(self, chat_id: str) -> str | None:
        await trio.lowlevel.checkpoint()
        entry = self._answers.get(chat_id)
        return None if entry is None else entry[0]

    async def answer_progress(self, chat_id: str) -> AnswerProgress | None:
        await trio.lowlevel.checkpoint()
        entry = self._answers.get(chat_id)
        return None if entry is None else AnswerProgress(entry[0], tuple(entry[1]))

    async def end_answer(self, chat_id: str, answer_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._drop_answer(chat_id, answer_id)

    def _drop_answer(self, chat_id: str, answer_id: str) -> None:
        entry = self._answers.get(chat_id)
        if entry is not None and entry[0] == answer_id:
            del self._answers[chat_id]

    async def finish_answer(
        self,
        chat_id: str,
        answer_id: str,
        message: Message | None,
        *,
        lease: str,
        channel: str,
        events: Sequence[dict[str, Any]],
        gone_events: Sequence[dict[str, Any]],
    ) -> bool:
        stored = False
        try:
            if message is not None and chat_id in self._state.chats:
                record = {"kind": "message", "chat_id": chat_id, **message.to_json()}
                stored = await self._commit_one(record)
        finally:
            # In memory, no checkpoint: done even when the commit failed or was cancelled.
            self._drop_answer(chat_id, answer_id)
            self._release(lease, answer_id)
        for event in events if stored else gone_events:
            self._fanout.deliver(channel, event)
        return stored

    # -- long-running operations ----------------------------------------------------------

    async def put_operation(self, operation: dict[str, Any]) -> None:
        await self._commit_one({"kind": "operation", "operation": copy.deepcopy(operation)})

    async def get_operation(self, operation_id: str) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        return copy.deepcopy(self._state.operations.get(operation_id))

    async def list_operations(self, *, unfinished_only: bool = False) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        records = reversed(self._state.operations.values())
        if unfinished_only:  # in memory already: a filter is the index
            records = (r for r in records if r.get("status") in UNFINISHED_OPERATION_STATUSES)
        return copy.deepcopy(list(records))

    async def put_checkpoint(
        self,
        operation_id: str,
        checkpoint: dict[str, Any],
        *,
        operation: dict[str, Any] | None = None,
    ) -> None:
        records = [
            {
                "kind": "checkpoint",
                "operation_id": operation_id,
                "checkpoint": copy.deepcopy(checkpoint),
            }
        ]
        if operation is not None:  # one commit, one fsync; the checkpoint's line first
            records.append({"kind": "operation", "operation": copy.deepcopy(operation)})
        await self._journal.commit(records)

    async def get_checkpoint(self, operation_id: str) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        return copy.deepcopy(self._state.checkpoints.get(operation_id))

    async def delete_checkpoint(self, operation_id: str) -> None:
        if operation_id in self._state.checkpoints:
            await self._commit_one({"kind": "checkpoint_deleted", "operation_id": operation_id})

    # -- leases (in memory) ---------------------------------------------------------------

    def _holder(self, name: str) -> str | None:
        lease = self._leases.get(name)
        if lease is None or lease[1] <= trio.current_time():
            return None
        return lease[0]

    async def claim_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        await trio.lowlevel.checkpoint()
        if self._holder(name) not in (None, owner):
            return False
        self._leases[name] = (owner, trio.current_time() + ttl_s)
        return True

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        await trio.lowlevel.checkpoint()
        if self._holder(name) != owner:
            return False
        self._leases[name] = (owner, trio.current_time() + ttl_s)
        return True

    async def release_lease(self, name: str, owner: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._release(name, owner)

    def _release(self, name: str, owner: str) -> bool:
        if self._holder(name) != owner:
            return False
        del self._leases[name]
        return True

    async def lease_owner(self, name: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._holder(name)

    # -- agent inboxes --------------------------------------------------------------------

    async def register_agent(self, agent: str) -> None:
        if agent in self._state.agents:
            await trio.lowlevel.checkpoint()
            return
        await self._commit_one({"kind": "agent", "agent": agent})

    async def list_agents(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(self._state.agents)

    async def touch_agent(self, agent: str, ttl_s: float) -> None:
        await self.register_agent(agent)
        self._live[agent] = trio.current_time() + ttl_s

    async def live_agents(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        current = trio.current_time()
        for agent in [a for a, until in self._live.items() if until <= current]:
            del self._live[agent]
        return sorted(self._live)

    def _inbox_message_record(
        self, agent: str, body: dict[str, Any], priority: Priority, created_at: str
    ) -> dict[str, Any]:
        self._state.inbox_seq += 1
        return {
            "kind": "inbox_message",
            "agent": agent,
            "id": new_id(),
            "priority": Priority(priority).name.lower(),
            "body": copy.deepcopy(body),
            "created_at": created_at,
            "seq": self._state.inbox_seq,
        }

    async def push_inbox(self, agent: str, body: dict[str, Any], priority: Priority) -> str:
        created_at, _ = now()
        record = self._inbox_message_record(agent, body, priority, created_at)
        await self._commit_one(record)
        return record["id"]

    async def push_inbox_many(
        self, agents: Sequence[str], body: dict[str, Any], priority: Priority
    ) -> list[str]:
        created_at, _ = now()
        records = [
            self._inbox_message_record(agent, body, priority, created_at)
            for agent in dict.fromkeys(agents)
        ]
        if records:
            await self._journal.commit(records)
        else:
            await trio.lowlevel.checkpoint()
        return [record["id"] for record in records]

    async def pop_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        # One taker at a time per inbox, so two takers never get the same message.
        async with self._inbox_locks.setdefault(agent, trio.Lock()):
            messages = self._state.peek_inbox(agent, max_count)
            if messages:
                # Shielded: once queued, the record is written whether or not its
                # committer still waits, and a committer cancelled here would lose
                # the messages it took. file.io bounds a writer that is not there.
                with trio.CancelScope(shield=True), deadline("file.io"):
                    await self._journal.commit(
                        [{"kind": "inbox_taken", "agent": agent, "ids": [m.id for m in messages]}]
                    )
            return messages

    async def return_inbox(self, agent: str, messages: Sequence[InboxMessage]) -> None:
        records = [inbox_record(agent, message, message.seq) for message in messages]
        if records:
            with deadline("file.io"):
                await self._journal.commit(records)
        else:
            await trio.lowlevel.checkpoint()

    async def wait_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        while True:
            changed = self._inbox_changed.setdefault(agent, trio.Event())
            messages = await self.pop_inbox(agent, max_count)
            if messages:
                return messages
            await changed.wait()

    # -- publish / subscribe ----------------------------------------------------------------

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        self._fanout.deliver(channel, message)

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._fanout.subscribe(channel)

    def follow(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._fanout.subscribe(channel)

    # -- migration ----------------------------------------------------------------------

    async def export_records(self, write: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        count = 0
        for record in self._state.records():
            await write(record)
            count += 1
        return count

    async def import_records(self, records: Iterable[dict[str, Any]]) -> int:
        batch = checked_import(records)
        if batch:
            await self._journal.commit(batch)
        else:
            await trio.lowlevel.checkpoint()
        return len(batch)

    async def aclose(self) -> None:
        self._fanout.close()
        await self._journal.aclose()


@asynccontextmanager
async def open_embedded_store(
    directory: Path,
    *,
    compact_after_bytes: int = COMPACT_AFTER_BYTES,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[EmbeddedStore]:
    """Open (recovering) the store in ``directory``; its writer runs until the block ends.

    The writer and compaction run under ``supervisor`` (else under one of the
    block's own), which also counts records dropped at replay.
    """
    async with using_supervisor(supervisor) as supervisor:
        journal = Journal(
            directory,
            EmbeddedState(),
            compact_after_bytes=compact_after_bytes,
            drop=supervisor.drop,
        )
        await journal.open()
        store = EmbeddedStore(journal)
        try:
            async with (
                supervisor.running("storage.journal", journal.run, critical=True),
                supervisor.running("storage.compaction", journal.run_compaction),
            ):
                yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
