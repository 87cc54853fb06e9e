"""An answer's tokens on their way to joiners: recorded and published in batches.

Every token of an answer is recorded (so a client joining midway gets the
text so far) and published on the chat's channel (so every listener, in
every process, gets it live): one store call does both
(:meth:`~autobot.storage.Store.append_answer_tokens`). The first token goes
out at once; tokens the model sends while a call is in flight wait for it
and go together in the next. A model slower than the store costs one round
trip per token, as before; a faster one costs one per batch, and the store
never holds up the model's stream: the asker gets each token directly, before
it is recorded.

A call in flight is finished even when the answer is cancelled (it is
shielded, and bounded by ``redis.command`` in the client): the tokens of a
batch are recorded and published whole or not at all, never in an unknown
state, so what is still pending when the answer ends can go out with its
final event (:meth:`TokenRecorder.take_pending`) without a gap or a repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._errors import AutoBotError
from .._logging import log_fields
from ..storage import Store

__all__ = ["TokenRecorder"]

log = logging.getLogger("autobot.chat")


class TokenRecorder:
    """Records and publishes one answer's tokens in order; run :meth:`run` beside the answer.

    ``on_gone`` is awaited (once) when the store says the answer is no longer
    the chat's answer in progress, which is how an answer hears that its chat
    was deleted under it; nothing more is recorded after that.
    """

    def __init__(
        self,
        store: Store,
        chat_id: str,
        answer_id: str,
        channel: str,
        on_gone: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._chat_id = chat_id
        self._answer_id = answer_id
        self._channel = channel
        self._on_gone = on_gone
        self._first_seq = 1  # the seq of the first pending token
        self._deltas: list[str] = []
        self._events: list[dict[str, Any]] = []
        self._pending = trio.Event()
        self._gone = False

    def add(self, seq: int, delta: str, event: dict[str, Any]) -> None:
        """Queue token ``seq`` (the next one) and its channel ``event``; never blocks."""
        if self._gone:
            return
        if not self._deltas:
            self._first_seq = seq
        self._deltas.append(delta)
        self._events.append(event)
        self._pending.set()

    def take_pending(self) -> list[dict[str, Any]]:
        """The events of the tokens not written yet, which the caller publishes instead."""
        events, self._deltas, self._events = self._events, [], []
        return [] if self._gone else events

    async def run(self) -> None:
        """Write what is pending, one call at a time, until cancelled."""
        while True:
            await self._pending.wait()
            # One turn of the scheduler first: the asker's writer, woken by the same
            # token, sends it before this call takes the CPU (and later tokens join it).
            await trio.lowlevel.checkpoint()
            self._pending = trio.Event()
            first_seq, deltas, events = self._first_seq, self._deltas, self._events
            self._deltas, self._events = [], []
            with trio.CancelScope(shield=True):
                current = await self._write(first_seq, deltas, events)
            if not current:
                self._gone = True
                await self._on_gone()
                return

    async def _write(self, first_seq: int, deltas: list[str], events: list[dict[str, Any]]) -> bool:
        try:
            return await self._store.append_answer_tokens(
                self._chat_id, self._answer_id, first_seq, deltas, self._channel, events
            )
        except AutoBotError as error:
            # Listeners and joiners miss these tokens; the answer itself goes on.
            log.warning(
                "tokens not published",
                extra=log_fields(error=error.message, tokens=len(deltas)),
            )
            return True
