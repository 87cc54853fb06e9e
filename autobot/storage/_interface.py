"""The one storage and messaging interface the features are written against.

Two backends implement it: :class:`~autobot.storage.EmbeddedStore` (one
process, data on disk under the data dir) and :class:`~autobot.storage.RedisStore`
(any number of processes sharing one Redis). Both pass the same contract test
suite (``tests/storage/test_contract.py``), which is the precise specification;
the docstrings here say what callers may rely on.

Every method may raise :class:`~autobot.ServiceUnavailable` (``storage_unavailable``
or ``redis_unavailable``) when the backend cannot be reached or written, and
:class:`~autobot.DeadlineExceeded` when a step outlived its deadline scope
(``file.io``, ``redis.command``). Every method is safe to cancel: a write that
was cancelled either happened whole or not at all, never in part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .._health import HealthCheck
from ._answer_progress import AnswerProgress
from ._fact_log import FactChange
from ._models import Chat, Fact, InboxMessage, Message, Priority

__all__ = ["Store"]


class Store(Protocol):
    #: Which backend this is (``embedded``, ``redis``): for reports, never for branching.
    backend: str

    # -- what the services report about the store ---------------------------------

    def health_checks(self) -> list[HealthCheck]:
        """The store's own entries for ``/api/health`` (its journal, its Redis).

        The services add them to theirs while the store is open; each check
        says itself whether it is critical.
        """
        ...

    def breakers(self) -> list[dict[str, Any]]:
        """Snapshots of the circuit breakers guarding the store's dependencies, for metrics.

        Each carries ``dependency`` and ``target`` beside the breaker's own
        snapshot fields; a backend with nothing remote returns none.
        """
        ...

    # -- chats ------------------------------------------------------------------

    async def create_chat(self, title: str | None = None) -> Chat:
        """A new, empty chat; ``title`` defaults to "New chat"."""
        ...

    async def get_chat(self, chat_id: str) -> Chat:
        """The chat with its current ``message_count``; ``NotFound`` ``chat_not_found``."""
        ...

    async def list_chats(self, limit: int = 100, offset: int = 0) -> list[Chat]:
        """Chats newest first: the most recently created or appended to comes first."""
        ...

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat and its messages; ``NotFound`` ``chat_not_found``."""
        ...

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
        """Append one message as a whole; the chat becomes the newest.

        Concurrent appends to one chat are serialised: each lands whole, in
        some order, none lost. ``NotFound`` when the chat does not exist.
        ``sources`` and ``knowledge_error`` are kept with the message (see
        :class:`Message`).
        """
        ...

    async def get_messages(
        self, chat_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        """Messages ``[start:stop]`` in append order (Python slice rules, negatives too)."""
        ...

    # -- knowledge facts -----------------------------------------------------------

    async def put_fact(self, text: str, metadata: dict[str, Any] | None = None) -> Fact: ...

    async def get_fact(self, fact_id: str) -> Fact:
        """``NotFound`` ``fact_not_found`` when missing."""
        ...

    async def delete_fact(self, fact_id: str) -> None:
        """``NotFound`` ``fact_not_found`` when missing."""
        ...

    async def list_facts(self) -> list[Fact]:
        """Every fact, oldest first."""
        ...

    async def get_facts(self, fact_ids: Sequence[str]) -> dict[str, Fact]:
        """The facts of ``fact_ids`` that exist, by id (one round trip)."""
        ...

    async def fact_log_position(self) -> int:
        """The number of the latest change in the fact log (0 before any).

        Read it before :meth:`list_facts` to follow the log from there: see
        :mod:`autobot.storage._fact_log`.
        """
        ...

    async def read_fact_log(self, after: int, max_count: int = 1000) -> list[FactChange] | None:
        """Up to ``max_count`` changes after number ``after``, oldest first.

        Waits up to about a second for one when there is none yet (``[]``
        then). ``None`` when changes after ``after`` are no longer kept (the
        reader fell behind, or the log was reset): rebuild from the facts.
        """
        ...

    async def put_fact_vectors(self, model: str, vectors: Mapping[str, bytes]) -> list[str]:
        """Store each fact's embedding by ``model`` (opaque bytes); the ids stored.

        Facts that no longer exist are skipped. Deleting a fact deletes its
        embeddings. Each stored id is logged as a ``vectors`` change.
        """
        ...

    async def get_fact_vectors(self, model: str, fact_ids: Sequence[str]) -> dict[str, bytes]:
        """The embeddings by ``model`` of those of ``fact_ids`` that have one."""
        ...

    async def list_fact_vectors(self, model: str) -> dict[str, bytes]:
        """Every stored embedding by ``model``, by fact id."""
        ...

    # -- answers in progress (see _answer_progress) ------------------------------------

    async def begin_answer(self, chat_id: str, answer_id: str) -> None:
        """Keep the tokens of answer ``answer_id`` of ``chat_id`` from now on."""
        ...

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
        """Open answer ``answer_id`` to the user's ``content``, in one step.

        The chat must exist (``chat_not_found`` if not). ``lease`` is claimed
        for ``answer_id`` as :meth:`claim_lease` would; when someone else holds
        it, nothing changes and this returns ``None``. Otherwise ``content`` is
        stored as the user's message, the answer's tokens are kept from now on
        (:meth:`begin_answer`), and this returns that message and the chat's
        last ``history`` messages, the new one included. One round trip with
        Redis: the first thing every answer does costs one.
        """
        ...

    async def append_answer_tokens(
        self,
        chat_id: str,
        answer_id: str,
        first_seq: int,
        deltas: Sequence[str],
        channel: str,
        events: Sequence[dict[str, Any]],
    ) -> bool:
        """Record tokens ``first_seq``, ``first_seq + 1``... and publish ``events`` on
        ``channel`` (one per token, in order), all in one step.

        False, and nothing recorded or published, when ``answer_id`` is no
        longer the chat's answer in progress: its chat was deleted.
        """
        ...

    async def answering(self, chat_id: str) -> str | None:
        """The id of the answer streaming in ``chat_id``, or ``None``: cheap, unlike
        :meth:`answer_progress`, for a caller that only needs to know whether one is."""
        ...

    async def answer_progress(self, chat_id: str) -> AnswerProgress | None:
        """The answer streaming in ``chat_id`` and its tokens so far; ``None`` when none is."""
        ...

    async def end_answer(self, chat_id: str, answer_id: str) -> None:
        """Drop the progress of ``answer_id`` (call once the answer is stored)."""
        ...

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
        """End answer ``answer_id`` in one step: store ``message`` in the chat (unless
        None), drop the answer's progress, release ``lease`` if ``answer_id`` holds it,
        and publish ``events`` on ``channel``, or ``gone_events`` when the message was
        not stored because the chat no longer exists. True if ``message`` was stored.
        """
        ...

    # -- long-running operations ------------------------------------------------------

    async def put_operation(self, operation: dict[str, Any]) -> None:
        """Create or replace the operation record ``operation["id"]`` (a JSON object)."""
        ...

    async def get_operation(self, operation_id: str) -> dict[str, Any] | None: ...

    async def list_operations(self, *, unfinished_only: bool = False) -> list[dict[str, Any]]:
        """Every operation record, newest first (by first ``put``).

        ``unfinished_only``: just the records whose ``status`` is ``queued`` or
        ``running``, read from an index kept with every put, so that the search
        for operations to adopt costs what is unfinished, not every operation
        ever run.
        """
        ...

    async def put_checkpoint(
        self,
        operation_id: str,
        checkpoint: dict[str, Any],
        *,
        operation: dict[str, Any] | None = None,
    ) -> None:
        """Replace the operation's checkpoint; durable once this returns.

        With ``operation``, that record is replaced too, in the same durable
        write (a runner saves a checkpoint and the record's summary of it). A
        crash in the middle of it can leave the checkpoint without the record's
        update, never the record's update without the checkpoint.
        """
        ...

    async def get_checkpoint(self, operation_id: str) -> dict[str, Any] | None: ...

    async def delete_checkpoint(self, operation_id: str) -> None: ...

    # -- leases ---------------------------------------------------------------------

    async def claim_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lease if it is free, expired, or already ``owner``'s; True if taken.

        A lease is how one worker among several processes owns a piece of work
        (a running operation, the answer being streamed into a chat). It
        lapses ``ttl_s`` seconds after the last claim or renewal.
        """
        ...

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease; False if it lapsed or someone else holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> bool:
        """Give the lease up; False if ``owner`` did not hold it."""
        ...

    async def lease_owner(self, name: str) -> str | None: ...

    # -- agent inboxes -------------------------------------------------------------------

    async def register_agent(self, agent: str) -> None: ...

    async def list_agents(self) -> list[str]:
        """Registered agents, sorted by name."""
        ...

    async def touch_agent(self, agent: str, ttl_s: float) -> None:
        """Register ``agent`` and count it present for ``ttl_s`` seconds from now.

        Presence is what a broadcast reaches (:meth:`live_agents`); each touch
        replaces the previous one's expiry. It is not exported: present agents
        announce themselves again after a move or, embedded, a restart.
        """
        ...

    async def live_agents(self) -> list[str]:
        """Agents whose last :meth:`touch_agent` has not lapsed, sorted by name.

        The Redis backend keeps the expiries on Redis's own clock, so every
        process sees the same agents present whatever its own clock says.
        """
        ...

    async def push_inbox(self, agent: str, body: dict[str, Any], priority: Priority) -> str:
        """Queue a message for ``agent`` (registering it); returns the message id."""
        ...

    async def push_inbox_many(
        self, agents: Sequence[str], body: dict[str, Any], priority: Priority
    ) -> list[str]:
        """Queue one copy of a message for each of ``agents`` (a repeated name once).

        All copies are queued together or, on failure, none is, so a caller that
        retries a failed call never gives an agent a second copy. Returns the
        copies' ids, in the order of ``agents``.
        """
        ...

    async def pop_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        """Take up to ``max_count`` messages, highest priority first, FIFO within one.

        Returns at once, with an empty list when there is nothing to take.
        Cancelling it loses nothing: messages that were taken are returned.
        """
        ...

    async def return_inbox(self, agent: str, messages: Sequence[InboxMessage]) -> None:
        """Hand taken messages back, each to the place it was taken from.

        For a taker that could not pass them on (its receiver went away). Each
        goes back ahead of every message of its priority that arrived after it,
        so it is the next one taken; all of them together or none, and a waiter
        wakes as for a push.
        """
        ...

    async def wait_inbox(self, agent: str, max_count: int) -> list[InboxMessage]:
        """Like :meth:`pop_inbox`, but waits until at least one message is there.

        Waits without limit: bound it with a cancel scope. Cancelling the wait
        loses no message: messages are taken only once one is known to be there.
        """
        ...

    # -- publish / subscribe ------------------------------------------------------------

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every current subscriber of ``channel``, in every process."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Receive what is published on ``channel`` from now on, in order::

            async with store.subscribe("chat:42") as messages:
                async for message in messages:
                    ...

        A subscriber that falls too far behind is dropped: its iterator raises
        ``ServiceUnavailable`` rather than holding memory without bound.
        """
        ...

    def follow(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Like :meth:`subscribe`, at no cost: no round trip, no wait for the relay.

        In exchange, a message published just before the call may still
        arrive, and with Redis nothing is heard while the relay is down. For
        a listener that only reacts to what it is told (an answer watching for
        ``cancel``), not one that must see a stream from a known point.
        """
        ...

    # -- migration ------------------------------------------------------------------

    async def export_records(self, write: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        """Pass every stored record, a JSON object with a ``"kind"``, to ``write``; count them."""
        ...

    async def import_records(self, records: Iterable[dict[str, Any]]) -> int:
        """Store records made by :meth:`export_records` (of either backend); returns a count.

        Call it once per batch for a large import; records of one batch are
        written together.
        """
        ...
