"""An agent's inbox held open in this process: ``async for message in inbox``."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ._handover import Taken
from ._message import AgentMessage

if TYPE_CHECKING:
    from ._bus import AgentBus

__all__ = ["Inbox"]


class Inbox:
    """Messages for one agent, as an async iterator; open it with :meth:`AgentBus.inbox`.

    Iterating waits for each next message without limit (cancel the block to
    stop); a message handed out by the iterator or by :meth:`receive` is
    delivered. Safe to cancel while waiting: nothing is lost.
    """

    def __init__(self, bus: AgentBus, agent: str, prefetch: int) -> None:
        self._bus = bus
        self.agent = agent
        self._prefetch = prefetch
        self._buffer: deque[Taken] = deque()

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> AgentMessage:
        (message,) = await self.receive(1)
        return message

    async def receive(self, max_count: int = 1) -> list[AgentMessage]:
        """Up to ``max_count`` messages, waiting until there is one."""
        if not self._buffer:
            wanted = max(max_count, self._prefetch)
            self._buffer.extend(await self._bus._take(self.agent, wanted, block=True))
        handed = [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]
        self._bus._count("delivered", len(handed))
        return [message for _, message in handed]

    async def close(self) -> None:
        """Hand prefetched messages not handed out yet back to the inbox."""
        unread = [inbox_message for inbox_message, _ in self._buffer]
        self._buffer.clear()
        if unread:
            await self._bus._return_messages(self.agent, unread)
            self._bus._count("handed_back", len(unread))
