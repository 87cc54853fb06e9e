"""Detached answers: answers that run to their end although the client that asked left.

A request with ``"detach": true`` hands its answer to :class:`DetachedAnswers`,
the supervised service ``answers``, whose nursery belongs to the app's
lifespan, not to the request: the client that asked leaving (a flaky phone
network, a reloaded page) does not cancel it, and the client, or any other,
joins it again through the chat's WebSocket or ``GET /api/chats/{id}/stream``
(:meth:`ChatService.join`). Only a ``cancel`` stops it, or shutdown, which
stores it ``cancelled`` like any answer cut off.
"""

from __future__ import annotations

import logging

import trio

from .._errors import AutoBotError, ServiceUnavailable
from .._logging import log_fields
from ._service import Answer

__all__ = ["DetachedAnswers"]

log = logging.getLogger("autobot.chat")


class DetachedAnswers:
    """Runs answers in the app's lifespan: :meth:`run` is the service, :meth:`start` hands over."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.running = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start(self, answer: Answer) -> None:
        """Run ``answer`` to its end here; ``ServiceUnavailable`` while the service is down."""
        if self._nursery is None:
            raise ServiceUnavailable("detached answers are not available right now")
        self._nursery.start_soon(self._run, answer)

    async def _run(self, answer: Answer) -> None:
        self.running += 1
        try:
            await answer.run()
        except AutoBotError as error:
            # Its listeners got the error event; it is stored as far as it came.
            log.info("detached answer ended", extra=log_fields(code=error.code))
        finally:
            self.running -= 1
