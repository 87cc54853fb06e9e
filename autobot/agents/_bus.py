"""The agent message bus: per-agent inboxes in the store, presence, broadcasts.

Everything lives in the :class:`~autobot.storage.Store`, so the bus works the
same on both backends: in one process over the embedded store (a receiver
waits on a Trio event), across processes over Redis (a receiver waits on the
inbox's doorbell with a cancellable ``BLPOP``). An inbox serves the highest
priority first and, within a priority, the oldest first.

**Presence.** An agent is registered (and a broadcast reaches it) while it
receives, and for ``agent.presence`` seconds after its last receive or
heartbeat. A receive that waits renews it every ``agent.heartbeat`` seconds; an
open :meth:`AgentBus.inbox` renews it in the background; a ``heartbeat``
message renews its sender's. Three missed heartbeats and the agent is gone.

**Losing nothing.** A message leaves the inbox only when it is handed to a
receiver that is still there. A receive cancelled while waiting takes nothing
(the store's waits are safe to cancel); messages taken for a receiver that
then went away are handed back to where they were taken from (see
:mod:`._handover`).

**Expiry.** A message with ``ttl_s`` expires that many seconds after it was
sent, by the bus's clock (the wall clock: processes on one host agree). An
expired message is dropped when a receive takes it, never delivered, and
counted in :meth:`AgentBus.counts` (``expired``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from .._deadlines import current_deadlines
from .._errors import AutoBotError
from .._logging import log_fields
from ..storage import InboxMessage, Priority, Store, new_id
from ._handover import Handover, Taken
from ._inbox import Inbox
from ._message import (
    AgentMessage,
    MessageType,
    Outgoing,
    agent_name,
    iso_utc,
    outgoing,
)

__all__ = [
    "HANDOVER_SWEEP_S",
    "MAX_BATCH",
    "AgentBus",
    "Broadcast",
    "heartbeat_s",
    "presence_s",
]

log = logging.getLogger("autobot.agents")


def presence_s() -> float:
    """How long an agent stays registered after its last receive or heartbeat."""
    return current_deadlines().budget("agent.presence")


def heartbeat_s() -> float:
    """How often a waiting receive and an open inbox renew their agent's presence."""
    return current_deadlines().budget("agent.heartbeat")


#: How often the sweeper looks for handovers whose response never began.
HANDOVER_SWEEP_S = 1.0
#: The most messages one receive takes.
MAX_BATCH = 100

_COUNTS = ("sent", "delivered", "expired", "handed_back", "malformed")
# Renewal times remembered before the stale ones are forgotten.
_TOUCHED_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Broadcast:
    """What a broadcast did: its id (every copy's) and the agents it was queued for."""

    id: str
    recipients: tuple[str, ...]


def _body(message: AgentMessage, sent_at: float) -> dict[str, Any]:
    """What the store keeps of a message (the priority and the inbox are the store's)."""
    body: dict[str, Any] = {
        "id": message.id,
        "type": message.type.value,
        "sender": message.sender,
        "payload": message.payload,
        "created_at": message.created_at,
    }
    if message.ttl_s is not None:
        body["ttl_s"] = message.ttl_s
        body["expires_at"] = sent_at + message.ttl_s
    return body


def _from_body(agent: str, taken: InboxMessage) -> tuple[AgentMessage, float | None]:
    body = taken.body
    message = AgentMessage(
        id=str(body["id"]),
        type=MessageType(body["type"]),
        priority=taken.priority,
        sender=str(body["sender"]),
        recipient=agent,
        payload=body["payload"],
        created_at=str(body["created_at"]),
        ttl_s=body.get("ttl_s"),
    )
    expires_at = body.get("expires_at")
    return message, None if expires_at is None else float(expires_at)


class AgentBus:
    """Sending to, receiving from and broadcasting over agents' inboxes.

    ``store`` is the store, or a function returning the current one (the
    services reopen theirs after a failure). ``clock`` gives the wall-clock
    time in seconds that ``ttl_s`` is counted on. The app's bus is
    ``Services.agents``; :meth:`run` is its supervised sweeper.
    """

    def __init__(
        self, store: Store | Callable[[], Store], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store_of: Callable[[], Store] = store if callable(store) else (lambda: store)
        self._clock = clock
        self._counts: Counter[str] = Counter(dict.fromkeys(_COUNTS, 0))
        self._waiting: Counter[str] = Counter()
        self._touched: dict[str, float] = {}  # agent → when this process last renewed it
        self._handovers: set[Handover] = set()
        self._abandoned = trio.Event()

    # -- what the bus reports ----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Messages this process sent, delivered, dropped as expired or malformed, handed back."""
        return {name: self._counts[name] for name in _COUNTS}

    def waiting(self, agent: str) -> int:
        """Receives of ``agent`` waiting in this process right now."""
        return self._waiting[agent]

    def handovers(self) -> int:
        """Taken messages' handovers not yet delivered or handed back."""
        return len(self._handovers)

    async def agents(self) -> list[str]:
        """The agents registered now (present), sorted by name."""
        return await self._store_of().live_agents()

    async def heartbeat(self, agent: str) -> None:
        """Count ``agent`` present for another ``agent.presence`` seconds."""
        await self._touch(self._store_of(), agent_name(agent))

    async def _touch(self, store: Store, agent: str) -> None:
        current = trio.current_time()
        if len(self._touched) >= _TOUCHED_KEPT:  # names come from clients: keep it bounded
            for name, last in list(self._touched.items()):
                if current - last >= heartbeat_s():
                    del self._touched[name]
        self._touched[agent] = current
        await store.touch_agent(agent, presence_s())

    async def _touch_when_due(self, store: Store, agent: str) -> None:
        """Renew ``agent`` unless this process did less than a heartbeat period ago.

        A receive renews its agent; agents that receive often would otherwise
        cost a store write per receive for nothing.
        """
        last = self._touched.get(agent)
        if last is None or trio.current_time() - last >= heartbeat_s():
            await self._touch(store, agent)

    # -- sending -----------------------------------------------------------------------

    def _stamp(self, message: Outgoing, recipient: str) -> tuple[AgentMessage, float]:
        sent_at = self._clock()
        stamped = AgentMessage(
            id=new_id(),
            type=message.type,
            priority=message.priority,
            sender=message.sender,
            recipient=recipient,
            payload=message.payload,
            created_at=iso_utc(sent_at),
            ttl_s=message.ttl_s,
        )
        return stamped, sent_at

    async def send(
        self,
        recipient: str,
        *,
        type: MessageType | str,
        payload: Any,
        sender: str,
        priority: Priority | str = Priority.NORMAL,
        ttl_s: float | None = None,
    ) -> AgentMessage:
        """Queue a message for ``recipient``; returns it as the recipient will get it.

        Fields are checked as for the HTTP route (``ValidationFailed`` naming
        the field, ``PayloadTooLarge`` over 64 KiB). A ``heartbeat`` renews its
        sender's presence; sent by an agent to itself it does only that.
        """
        message = outgoing(
            type=type, payload=payload, sender=sender, priority=priority, ttl_s=ttl_s
        )
        return await self.post(agent_name(recipient, "recipient"), message)

    async def post(self, recipient: str, message: Outgoing) -> AgentMessage:
        """:meth:`send` for a message checked already (``parse_outgoing``)."""
        store = self._store_of()
        stamped, sent_at = self._stamp(message, recipient)
        if message.type is MessageType.HEARTBEAT:
            await self._touch(store, message.sender)
            if recipient == message.sender:
                return stamped
        await store.push_inbox(recipient, _body(stamped, sent_at), message.priority)
        self._counts["sent"] += 1
        return stamped

    async def broadcast(
        self,
        *,
        type: MessageType | str,
        payload: Any,
        sender: str,
        priority: Priority | str = Priority.NORMAL,
        ttl_s: float | None = None,
    ) -> Broadcast:
        """Queue one copy of a message for every registered agent.

        All copies are queued at once or none is, so each agent gets exactly
        one; they share the message's id. An agent that registers after the
        broadcast does not get it. The sender, if registered, gets its copy too.
        """
        message = outgoing(
            type=type, payload=payload, sender=sender, priority=priority, ttl_s=ttl_s
        )
        return await self.post_broadcast(message)

    async def post_broadcast(self, message: Outgoing) -> Broadcast:
        """:meth:`broadcast` for a message checked already."""
        store = self._store_of()
        if message.type is MessageType.HEARTBEAT:
            await self._touch(store, message.sender)
        recipients = await store.live_agents()
        stamped, sent_at = self._stamp(message, "")
        await store.push_inbox_many(recipients, _body(stamped, sent_at), message.priority)
        self._counts["sent"] += len(recipients)
        return Broadcast(stamped.id, tuple(recipients))

    # -- receiving -----------------------------------------------------------------------

    def _sift(self, agent: str, taken: list[InboxMessage]) -> list[Taken]:
        """The deliverable messages among ``taken``; the rest are counted and dropped."""
        now = self._clock()
        kept: list[Taken] = []
        for inbox_message in taken:
            try:
                message, expires_at = _from_body(agent, inbox_message)
            except (KeyError, ValueError, TypeError) as error:
                # Not a message this bus wrote (anyone who can reach Redis can push).
                self._counts["malformed"] += 1
                log.warning(
                    "malformed agent message dropped",
                    extra=log_fields(agent=agent, id=inbox_message.id, error=repr(error)),
                )
                continue
            if expires_at is not None and expires_at <= now:
                self._counts["expired"] += 1
                continue
            kept.append((inbox_message, message))
        return kept

    async def _take(self, agent: str, max_count: int, *, block: bool) -> list[Taken]:
        """Take up to ``max_count`` deliverable messages; with ``block``, at least one.

        Safe to cancel while it waits: nothing is taken until a message is
        there, and from then on it returns without another checkpoint.
        """
        name = agent_name(agent)
        if not 1 <= max_count <= MAX_BATCH:
            raise ValueError(f"max_count must be 1 to {MAX_BATCH}, not {max_count!r}")
        self._waiting[name] += 1
        try:
            while True:
                store = self._store_of()
                await self._touch_when_due(store, name)
                taken: list[InboxMessage] = []
                if block:
                    # Wake up now and then to renew the agent's presence.
                    with trio.move_on_after(heartbeat_s()):
                        taken = await store.wait_inbox(name, max_count)
                    if not taken:
                        continue
                else:
                    taken = await store.pop_inbox(name, max_count)
                    if not taken:
                        return []
                kept = self._sift(name, taken)
                if kept:
                    return kept
        finally:
            self._waiting[name] -= 1
            if not self._waiting[name]:
                del self._waiting[name]

    async def receive(self, agent: str, max_count: int = 1) -> list[AgentMessage]:
        """Up to ``max_count`` messages for ``agent``, waiting until there is one.

        Waits without limit: bound it with a cancel scope. Cancelling the wait
        loses nothing. Registers the agent (and keeps it registered while it
        waits).
        """
        taken = await self._take(agent, max_count, block=True)
        self._counts["delivered"] += len(taken)
        return [message for _, message in taken]

    async def receive_nowait(self, agent: str, max_count: int = 1) -> list[AgentMessage]:
        """Up to ``max_count`` messages for ``agent`` that are there now (maybe none)."""
        taken = await self._take(agent, max_count, block=False)
        self._counts["delivered"] += len(taken)
        return [message for _, message in taken]

    async def take(self, agent: str, max_count: int = 1, *, block: bool = True) -> Handover:
        """Messages for a receiver that may leave before it gets them (see :mod:`._handover`).

        Like :meth:`receive` (or :meth:`receive_nowait` without ``block``), but
        the messages are held in a :class:`Handover` until it is delivered or
        handed back; one never begun within ``agent.handover`` seconds is handed back
        by :meth:`run`.
        """
        taken = await self._take(agent, max_count, block=block)
        handover = Handover(
            agent,
            taken,
            return_messages=self._return_messages,
            settled=self._settled,
            abandoned=self._wake_sweeper,
        )
        if taken:
            self._handovers.add(handover)
        return handover

    async def _return_messages(self, agent: str, messages: list[InboxMessage]) -> None:
        await self._store_of().return_inbox(agent, messages)

    def _settled(self, handover: Handover, delivered: bool) -> None:
        self._handovers.discard(handover)
        self._counts["delivered" if delivered else "handed_back"] += len(handover.messages)

    def _wake_sweeper(self) -> None:
        self._abandoned.set()

    def _count(self, name: str, number: int) -> None:
        self._counts[name] += number

    def inbox(self, agent: str, *, prefetch: int = 1) -> AbstractAsyncContextManager[Inbox]:
        """Hold ``agent``'s inbox open in this process and iterate over its messages::

            async with bus.inbox("planner") as inbox:
                async for message in inbox:
                    ...

        While the block runs, the agent is registered (renewed in the
        background every ``agent.heartbeat`` seconds). ``prefetch`` messages are
        taken at a time: more is faster, but a message of higher priority that
        arrives meanwhile waits until those are handled. Prefetched messages
        not yet handed out when the block ends go back to the inbox.
        """
        return self._open_inbox(agent_name(agent), prefetch)

    @asynccontextmanager
    async def _open_inbox(self, agent: str, prefetch: int) -> AsyncIterator[Inbox]:
        if not 1 <= prefetch <= MAX_BATCH:
            raise ValueError(f"prefetch must be 1 to {MAX_BATCH}, not {prefetch!r}")
        inbox = Inbox(self, agent, prefetch)
        await self.heartbeat(agent)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_present, agent)
            try:
                yield inbox
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await inbox.close()

    async def _keep_present(self, agent: str) -> None:
        while True:
            await trio.sleep(heartbeat_s())
            try:
                await self.heartbeat(agent)
            except AutoBotError as error:
                # The receives report a store that is down; presence tries again.
                log.warning(
                    "agent heartbeat failed", extra=log_fields(agent=agent, error=str(error))
                )

    # -- the sweeper -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand back the messages of handovers whose response never began; until cancelled.

        When cancelled, every handover not yet being sent is handed back.
        """
        task_status.started()
        try:
            while True:
                with trio.move_on_after(HANDOVER_SWEEP_S):
                    await self._abandoned.wait()
                self._abandoned = trio.Event()
                now = trio.current_time()
                await self._hand_back([h for h in self._handovers if h.overdue(now)])
        finally:
            with trio.CancelScope(shield=True):
                await self._hand_back([h for h in self._handovers if h.overdue(float("inf"))])

    async def _hand_back(self, handovers: list[Handover]) -> None:
        for handover in handovers:
            try:
                await handover.hand_back()
            except AutoBotError as error:
                log.error(
                    "messages could not be handed back yet",
                    extra=log_fields(agent=handover.agent, error=str(error)),
                )
