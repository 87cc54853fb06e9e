"""Answers in progress: each one's tokens in order, so a client can join it midway.

While an answer streams, the store keeps every token with its sequence
number (from 1) beside the chat: in memory on the embedded store, in a Redis
Stream per answer (``answer:<answer id>``, entry ids ``<seq>-0``) with Redis,
so any process can serve a joiner. A token is recorded and published on the
chat's channel in one step (one Lua script: no extra round trip per token),
which is what lets a joiner see everything exactly once: it subscribes to the
channel first, then reads the progress (the tokens up to ``seq``), then keeps
the channel's tokens after ``seq``. A token recorded before the read is in
it; one recorded after reaches the subscription.

The progress is dropped when the answer ends, after the answer is stored and
before its final event is published, so a joiner that finds no progress finds
the stored answer instead. With Redis the keys also expire by themselves
(:data:`ANSWER_PROGRESS_TTL_S`) if a process dies midway.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ANSWER_PROGRESS_TTL_S", "AnswerProgress"]

#: How long the Redis keys of an answer in progress outlive a process that died.
ANSWER_PROGRESS_TTL_S = 900


@dataclass(frozen=True, slots=True)
class AnswerProgress:
    """The answer streaming in a chat: its id, and its tokens so far (token ``n`` at ``n - 1``)."""

    answer_id: str
    tokens: tuple[str, ...] = ()

    @property
    def seq(self) -> int:
        """The sequence number of the last token (0 before the first)."""
        return len(self.tokens)

    @property
    def text(self) -> str:
        return "".join(self.tokens)
