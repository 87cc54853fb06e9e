"""Messages on their way to a receiver over a connection: sent whole, or handed back.

A receiver in this process is there when :meth:`~autobot.agents.AgentBus.receive`
returns. One at the other end of an HTTP request is not known to be until its
response was written: it may leave between the moment its messages were taken
from the inbox and that write. A :class:`Handover` holds the taken messages
through that gap:

* ``pending``: taken, the response not begun. If it does not begin within
  ``agent.handover`` seconds (the request was cancelled before its body was
  entered, a window no code of the route runs in), the bus's sweeper hands
  the messages back.
* ``sending``: :meth:`Handover.start` was called as the response body began;
  the body then calls :meth:`Handover.delivered` once written, or
  :meth:`Handover.abandon` if writing it failed or was cancelled: the
  handover is then ``pending`` and due at once, and the sweeper, woken,
  hands the messages back (a store write that a cancelled request does not
  have to wait for).
* ``delivered`` or ``returned``: final. A hand back that failed (the store was
  unavailable) goes back to ``pending``, due at once, and the sweeper tries
  again.

Handed back, a message goes to the place it was taken from, ahead of every
later message of its priority (``Store.return_inbox``), so the next receiver
gets it first.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

import trio

from .._deadlines import current_deadlines
from ..storage import InboxMessage
from ._message import AgentMessage

__all__ = ["Handover", "HandoverState"]


Taken = tuple[InboxMessage, AgentMessage]
_ReturnMessages = Callable[[str, list[InboxMessage]], Awaitable[None]]
_Settled = Callable[["Handover", bool], None]
_Abandoned = Callable[[], None]


class HandoverState(enum.Enum):
    PENDING = "pending"
    SENDING = "sending"
    RETURNING = "returning"
    DELIVERED = "delivered"
    RETURNED = "returned"


class Handover:
    """Messages taken for one receiver, until they are delivered or handed back.

    Made by :meth:`~autobot.agents.AgentBus.take`; a handover with no
    messages is already settled.
    """

    def __init__(
        self,
        agent: str,
        taken: list[Taken],
        *,
        return_messages: _ReturnMessages,
        settled: _Settled,
        abandoned: _Abandoned,
    ) -> None:
        self.agent = agent
        self._taken = taken
        self._return_messages = return_messages
        self._settled = settled
        self._abandoned = abandoned
        self.due = trio.current_time() + current_deadlines().budget("agent.handover")
        self.state = HandoverState.PENDING if taken else HandoverState.DELIVERED

    @property
    def messages(self) -> list[AgentMessage]:
        return [message for _, message in self._taken]

    def start(self) -> list[AgentMessage]:
        """The response begins: the messages to write, or none if they were handed back."""
        if self.state is not HandoverState.PENDING:
            return []
        self.state = HandoverState.SENDING
        return self.messages

    def delivered(self) -> None:
        """The response carrying the messages was written: they are the receiver's now."""
        if self.state is HandoverState.SENDING:
            self.state = HandoverState.DELIVERED
            self._settled(self, True)

    def abandon(self) -> None:
        """The response could not be written: the sweeper is to hand the messages back now."""
        if self.state is HandoverState.SENDING:
            self.state = HandoverState.PENDING
            self.due = trio.current_time()
            self._abandoned()

    async def hand_back(self) -> None:
        """Put the messages back in the inbox, each where it was taken from.

        Does nothing once they were delivered or handed back. If the store
        refuses, the error propagates and the handover is due again, for the
        sweeper to retry. Run it shielded when cleaning up after a cancellation.
        """
        if self.state not in (HandoverState.PENDING, HandoverState.SENDING):
            await trio.lowlevel.checkpoint()
            return
        self.state = HandoverState.RETURNING
        try:
            await self._return_messages(self.agent, [inbox for inbox, _ in self._taken])
        except BaseException:
            self.state = HandoverState.PENDING
            self.due = trio.current_time()
            raise
        self.state = HandoverState.RETURNED
        self._settled(self, False)

    def overdue(self, now: float) -> bool:
        return self.state is HandoverState.PENDING and self.due <= now
