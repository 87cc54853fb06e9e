"""Answers grounded in the knowledge base: the facts for a message, as the model's context.

An answer asked for with ``"knowledge": true`` first looks up the best facts
for the user's message (:func:`find_context`), under the answer's own budget
``kb.answer_context`` (1 s by default) around the search's ``kb.search``: a
slow index costs an answer its context, never the answer. The facts reach the
model as one system message (:func:`context_message`), and the stored answer
carries ``sources``: the facts' ids and scores, in the order the model saw
them. When the search fails or its budget runs out, the answer goes on without
context, with ``sources: []`` and a ``knowledge_error`` in the contract's
error shape (for an expiry ``deadline_exceeded`` naming ``kb.answer_context``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._deadlines import deadline
from .._errors import AutoBotError
from .._logging import log_fields

__all__ = [
    "Context",
    "FactSearch",
    "Grounding",
    "context_message",
    "find_context",
    "grounded_prompt",
]

log = logging.getLogger("autobot.chat")

CONTEXT_INSTRUCTIONS = (
    "Facts from the knowledge base that may help with the user's next message. "
    "Answer from them where they apply, and cite the ids of the facts you use, "
    "like [fact <id>], when that helps the user. If they do not cover the question, "
    "say so and answer from what you know; never invent facts or ids."
)


#: The most characters of one fact given to the model. A fact may hold 65,536,
#: and five of those would fill a small model's whole context; the start of a
#: fact is its gist (crawled and file facts are chunks of at most 1,500).
CONTEXT_FACT_CHARS = 4000


class FoundFact(Protocol):
    """What the chat needs of one search hit (the knowledge base's ``SearchHit``)."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


class FactSearch(Protocol):
    """What the chat needs of the knowledge base: its search, best first."""

    async def search(self, query: str, limit: int = 10) -> Sequence[FoundFact]: ...


@dataclass(frozen=True, slots=True)
class Grounding:
    """Where an answer looks for its facts, and how many it takes at most (1 or more)."""

    knowledge: FactSearch
    limit: int


@dataclass(frozen=True, slots=True)
class Context:
    """What the search gave one answer.

    ``facts`` go to the model in this order; ``error`` is the contract's error
    object (``{"code", "message", ...}``) when the search failed or expired.
    """

    facts: Sequence[FoundFact] = ()
    error: dict[str, Any] | None = None

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The stored answer's ``sources``: ``[{"id", "score"}]`` in the order given."""
        return [{"id": fact.id, "score": float(fact.score)} for fact in self.facts]


async def find_context(grounding: Grounding, query: str) -> Context:
    """The best facts for ``query``; on any :class:`AutoBotError` none, with the error.

    Bounded by ``kb.answer_context`` (the knowledge search nests its own
    ``kb.search`` inside, and the shorter wins). Cancellation from outside
    (the answer cancelled) propagates as usual.
    """
    try:
        with deadline("kb.answer_context"):
            facts = list(await grounding.knowledge.search(query, grounding.limit))
    except AutoBotError as error:
        log.warning(
            "answer goes on without knowledge",
            extra=log_fields(code=error.code, error=error.message),
        )
        return Context(error=error.to_body()["error"])
    return Context(facts)


def _shortened(text: str) -> str:
    if len(text) <= CONTEXT_FACT_CHARS:
        return text
    return text[: CONTEXT_FACT_CHARS - 1].rstrip() + "…"


def context_message(facts: Sequence[FoundFact]) -> dict[str, str]:
    """The system message that hands ``facts`` to the model, each with its id.

    It goes right before the user's message it answers, not before the
    conversation history (see :func:`grounded_prompt` for why). A fact longer
    than :data:`CONTEXT_FACT_CHARS` is cut there, with ``…``.
    """
    listed = "\n\n".join(f"[fact {fact.id}] {_shortened(fact.text)}" for fact in facts)
    return {"role": "system", "content": f"{CONTEXT_INSTRUCTIONS}\n\n{listed}"}


def grounded_prompt(prompt: list[dict[str, str]], context: Context) -> list[dict[str, str]]:
    """``prompt`` with the context's system message right before its last (the user's) message.

    Why there rather than first, before the history:

    * Chat models weigh what is near the end of the context most, and these
      facts were found for this message, not for the conversation: next to the
      question they are read as its material, and the instruction to cite them
      is fresh when the answer begins.
    * The system prompt and the history stay a byte-identical prefix from one
      turn to the next, so providers that reuse a cached prompt prefix (Ollama
      and llama.cpp keep the KV cache of the previous request; OpenAI caches
      prefixes) only process the new tail. Facts placed first would change the
      prefix every turn and make the whole history be processed again.
    * Earlier answers' facts are not replayed (the history holds the stored
      messages only); facts placed first would read as if they had governed
      those earlier turns.

    The cost: a few strict chat templates accept a system message only in
    first place. Ollama's templates and OpenAI's API take one anywhere.
    Without facts, the prompt is returned unchanged.
    """
    if not context.facts:
        return prompt
    return [*prompt[:-1], context_message(context.facts), *prompt[-1:]]
