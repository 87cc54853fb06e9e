"""The chat workflow: a user message in, a streamed answer out, everything stored.

One answer, step by step (:meth:`ChatService.start_answer`, then :meth:`Answer.run`):

1. The chat's answer lease (``answer:<chat id>``) is claimed, so one answer at a
   time runs per chat across every process sharing the store; a second gets
   :class:`Conflict` ``answer_in_progress``.
2. The user message is stored before the LLM is asked.
3. With ``"knowledge": true``, the best facts for the message are found (within
   ``kb.answer_context``) and given to the model as a system message right
   before it (:mod:`._grounding`); the answer will carry their ``sources``, or
   ``sources: []`` and a ``knowledge_error`` when the search failed.
4. The answer streams from the LLM. Every delta is published on the chat's
   channel (``chat:<id>``), which every listener of the chat receives: WebSocket
   clients in this process and in others. The caller that asked may also take
   the deltas directly (``on_event``), as the HTTP stream does.
5. The assistant message is stored with what arrived: ``complete``;
   ``cancelled`` when the caller went away or someone sent ``cancel``; ``failed``
   when the provider failed or a deadline expired. A final event (``done``,
   ``cancelled`` or ``error``) closes the stream for every listener.

Cancellation reaches the LLM request in the same step: the stream's owner
closes the provider connection while unwinding. The final store and publish
are shielded from that cancellation and bounded by their own deadlines, so a
cut-off answer is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .._errors import (
    AutoBotError,
    Conflict,
    LLMFailure,
    NotFound,
    ValidationFailed,
)
from .._logging import log_fields
from ..llm import LLM, PromptTemplates
from ..storage import AnswerProgress, Chat, Message, Store, chat_not_found, new_id, now
from ._grounding import Context, Grounding, find_context, grounded_prompt
from ._token_recorder import TokenRecorder

__all__ = [
    "MAX_CONTENT_CHARS",
    "Answer",
    "ChatDeleted",
    "ChatService",
    "Joined",
    "answer_lease",
    "chat_channel",
    "check_chat_id",
    "control_channel",
    "validate_content",
    "validate_detach",
    "validate_knowledge",
    "validate_model",
]

log = logging.getLogger("autobot.chat")

MAX_CONTENT_CHARS = 32_000
MAX_MODEL_CHARS = 200
# How many earlier messages go to the LLM with a new one.
HISTORY_MESSAGES = 50
# The per-chat answer lease: long enough to survive a slow store, renewed while
# streaming; a process that dies mid-answer frees the chat within the TTL.
ANSWER_LEASE_TTL_S = 30.0
ANSWER_LEASE_RENEW_S = 10.0
# <data dir>/prompts/system.md, when it exists, is the system prompt of every answer.
SYSTEM_PROMPT_TEMPLATE = "system"

EventSink = Callable[[dict[str, Any]], Awaitable[None]]

# The reason a cancel request gives when the chat itself was deleted.
CHAT_DELETED = "chat_deleted"


class ChatDeleted(Conflict):
    """The chat was deleted while its answer streamed; listeners were told already."""

    code = CHAT_DELETED


def _chat_deleted() -> ChatDeleted:
    return ChatDeleted("the chat was deleted while it was being answered")


class AnswerObserver(Protocol):
    """Told about every finished answer (the app's metrics implement it)."""

    def answer_finished(self, status: str, characters: int, stats: Mapping[str, Any]) -> None: ...


# IDs are ours (32 hex digits); anything much longer cannot name a chat, and is
# answered chat_not_found without asking the store.
MAX_ID_CHARS = 100


def chat_channel(chat_id: str) -> str:
    """Where a chat's answer events are published."""
    return f"chat:{chat_id}"


def answer_lease(chat_id: str) -> str:
    """The lease held by whichever process is answering in the chat."""
    return f"answer:{chat_id}"


def control_channel(chat_id: str) -> str:
    """Where ``cancel`` requests for a chat's answer are published."""
    return f"chat:{chat_id}:control"


def _invalid(field: str, problem: str, code: str | None = None) -> ValidationFailed:
    """A 422 in the same shape as a request-schema failure: a message and ``fields``."""
    return ValidationFailed(
        f"{field}: {problem}", code=code, fields=[{"field": field, "message": problem}]
    )


def validate_content(content: Any) -> str:
    if not isinstance(content, str):
        raise _invalid("content", "must be a string")
    if not content.strip():
        raise _invalid("content", "must not be empty or only whitespace")
    if len(content) > MAX_CONTENT_CHARS:
        raise _invalid(
            "content",
            f"at most {MAX_CONTENT_CHARS} characters (got {len(content)})",
            code="content_too_long",
        )
    return content


def validate_model(model: Any) -> str | None:
    if model is None:
        return None
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise _invalid("model", f"must be a non-empty string of at most {MAX_MODEL_CHARS}")
    return model


def validate_knowledge(knowledge: Any) -> bool:
    """``knowledge`` of a message: strictly ``true`` or ``false`` (absent: pass ``False``)."""
    if not isinstance(knowledge, bool):
        raise _invalid("knowledge", "must be true or false")
    return knowledge


def validate_detach(detach: Any) -> bool:
    if not isinstance(detach, bool):
        raise _invalid("detach", "must be true or false")
    return detach


def check_chat_id(chat_id: str) -> str:
    """``chat_id`` if it could name a chat; ``chat_not_found`` (echo capped) if not."""
    if len(chat_id) > MAX_ID_CHARS:
        raise chat_not_found(chat_id)
    return chat_id


async def _give_back(store: Store, chat_id: str, answer_id: str) -> None:
    """Drop answer ``answer_id``'s progress and lease; both lapse by themselves if this fails."""
    try:
        await store.end_answer(chat_id, answer_id)
        await store.release_lease(answer_lease(chat_id), answer_id)
    except AutoBotError as error:
        log.warning("answer not given back", extra=log_fields(error=error.message))


class Answer:
    """One answer: claimed and with its user message stored; :meth:`run` streams it."""

    def __init__(
        self,
        service: ChatService,
        chat_id: str,
        answer_id: str,
        user_message: Message,
        prompt: list[dict[str, str]],
        model: str | None,
        grounding: Grounding | None = None,
    ) -> None:
        self._service = service
        self.chat_id = chat_id
        self.id = answer_id
        self.user_message = user_message
        self._prompt = prompt
        self._model = model
        self._lease = answer_lease(chat_id)
        self._parts: list[str] = []
        self._stats: Mapping[str, Any] = {}
        self._chat_deleted = False
        self._grounding = grounding
        # What the knowledge search gave; stays None while it runs (or if it never did).
        self._context: Context | None = None
        self._tokens = TokenRecorder(
            service.store, chat_id, answer_id, chat_channel(chat_id), self._recording_stopped
        )
        self._scope: trio.CancelScope | None = None

    @property
    def text(self) -> str:
        """What has arrived so far."""
        return "".join(self._parts)

    async def run(self, on_event: EventSink | None = None) -> Message:
        """Stream the answer to its end and store it; returns the assistant message.

        Raises the LLM's failure (an :class:`LLMFailure`) after storing what had
        arrived as ``failed``. When cancelled from outside, stores it as
        ``cancelled`` and lets the cancellation go on; when a ``cancel`` request
        stopped it, returns the ``cancelled`` message. When the chat is deleted
        mid-answer, the answer stops at once (the LLM request closed), nothing is
        stored, every listener gets one ``error`` event ``chat_deleted``, and this
        raises :class:`ChatDeleted` (409 ``chat_deleted``).

        A grounded answer (see :mod:`._grounding`) first finds its facts, inside
        this answer's cancellation: a ``cancel`` or a client leaving stops the
        search too, and the answer is stored with ``sources: []``.
        """
        failure: AutoBotError | None = None
        status = "cancelled"
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._keep_lease)
                nursery.start_soon(self._tokens.run)
                await nursery.start(self._watch_for_cancel, nursery.cancel_scope)
                try:
                    if self._grounding is not None:
                        await self._ground(self._grounding)
                    await self._stream(on_event)
                    status = "complete"
                except LLMFailure as error:
                    status, failure = "failed", error
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                message = await self._finish(status, failure, on_event)
        if message is None:
            raise _chat_deleted()
        if failure is not None:
            raise failure
        return message

    async def _ground(self, grounding: Grounding) -> None:
        self._context = await find_context(grounding, self.user_message.content)
        self._prompt = grounded_prompt(self._prompt, self._context)

    def _knowledge_fields(self) -> dict[str, Any]:
        """The stored answer's ``sources`` (and ``knowledge_error``), if it was grounded."""
        if self._grounding is None:
            return {}
        if self._context is None:
            return {"sources": []}
        fields: dict[str, Any] = {"sources": self._context.sources}
        if self._context.error is not None:
            fields["knowledge_error"] = self._context.error
        return fields

    async def _stream(self, on_event: EventSink | None) -> None:
        async with self._service.llm.stream(self._prompt, self._model) as deltas:
            async for delta in deltas:
                self._parts.append(delta)
                await self._token(delta, len(self._parts), on_event)
            self._stats = deltas.stats

    async def _token(self, delta: str, seq: int, on_event: EventSink | None) -> None:
        """Hand token ``seq`` to the asker, then to the recorder (joiners, other listeners)."""
        event = {"type": "token", "delta": delta, "seq": seq, "answer_id": self.id}
        if on_event is not None:
            await on_event(event)
        self._tokens.add(seq, delta, event)

    async def _recording_stopped(self) -> None:
        """The store no longer has this answer in progress: stop if the chat was deleted."""
        try:
            await self._service.store.get_chat(self.chat_id)
        except NotFound:
            self._chat_deleted = True
            if self._scope is not None:
                self._scope.cancel()
        except AutoBotError as error:
            log.warning("chat not checked", extra=log_fields(error=error.message))
        else:
            log.warning("answer progress lost", extra=log_fields(chat_id=self.chat_id))

    async def _finish(
        self, status: str, failure: AutoBotError | None, on_event: EventSink | None
    ) -> Message | None:
        """Store what arrived, free the chat, tell every listener; None if the chat is gone.

        One store call (:meth:`~autobot.storage.Store.finish_answer`): the answer is
        stored, its progress dropped (a joiner finds one or the other) and its
        final event published after the tokens still pending. Run shielded; the
        store call is bounded by its own deadline.
        """
        created_at, _ = now()
        message: Message | None = None
        if not self._chat_deleted:
            message = Message(
                self.id, "assistant", self.text, created_at, status, **self._knowledge_fields()
            )
        gone: dict[str, Any] = {"type": "error", "error": _chat_deleted().to_body()["error"]}
        if message is None:
            event = gone
        elif failure is not None:
            event = {
                "type": "error",
                "error": failure.to_body()["error"],
                "message": message.to_json(),
            }
        else:
            kind = "done" if status == "complete" else "cancelled"
            event = {"type": kind, "message": message.to_json()}
        stored = await self._service.store.finish_answer(
            self.chat_id,
            self.id,
            message,
            lease=self._lease,
            channel=chat_channel(self.chat_id),
            events=[*self._tokens.take_pending(), event],
            gone_events=[gone],
        )
        if not stored:
            message, event, status = None, gone, "deleted"
        if on_event is not None:
            await on_event(event)
        characters = len(self.text)
        if self._service.observer is not None:
            self._service.observer.answer_finished(status, characters, self._stats)
        log.info(
            "answer finished",
            extra=log_fields(chat_id=self.chat_id, status=status, characters=characters),
        )
        return message

    async def abandon(self) -> None:
        """Give the chat back without answering (the caller will never call :meth:`run`)."""
        await _give_back(self._service.store, self.chat_id, self.id)

    async def _keep_lease(self) -> None:
        while True:
            await trio.sleep(ANSWER_LEASE_RENEW_S)
            try:
                if not await self._service.store.renew_lease(
                    self._lease, self.id, ANSWER_LEASE_TTL_S
                ):
                    log.warning("answer lease lost", extra=log_fields(chat_id=self.chat_id))
            except AutoBotError as error:
                log.warning("answer lease not renewed", extra=log_fields(error=error.message))

    async def _watch_for_cancel(
        self, answer_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Cancel the answer on a ``cancel`` request or when the chat is deleted."""
        started = False
        try:
            # A delete that lands before this is heard of through the token recorder.
            async with self._service.store.follow(control_channel(self.chat_id)) as requests:
                task_status.started()
                started = True
                async for request in requests:
                    if request.get("type") == "cancel":
                        self._chat_deleted = request.get("reason") == CHAT_DELETED
                        answer_scope.cancel()
                        return
        except AutoBotError as error:
            # Without the control channel the answer still runs; it just cannot
            # be cancelled from another client until the store is back.
            log.warning("cancel requests unavailable", extra=log_fields(error=error.message))
            if not started:
                task_status.started()


@dataclass(frozen=True, slots=True)
class Joined:
    """What a client joining a chat gets: the answer in progress (or None), then its events."""

    progress: AnswerProgress | None
    events: AsyncIterator[dict[str, Any]]

    def snapshot(self) -> dict[str, Any] | None:
        """The contract's ``snapshot`` event for the answer in progress; None when none is."""
        if self.progress is None:
            return None
        message = {
            "id": self.progress.answer_id,
            "role": "assistant",
            "status": "streaming",
            "content": self.progress.text,
        }
        return {"type": "snapshot", "message": message, "seq": self.progress.seq}


class _TokensAfter:
    """The chat's events, less the tokens of ``answer_id`` up to ``seen`` (in a snapshot)."""

    def __init__(
        self, events: AsyncIterator[dict[str, Any]], answer_id: str | None, seen: int
    ) -> None:
        self._events, self._answer_id, self._seen = events, answer_id, seen

    def __aiter__(self) -> _TokensAfter:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            event = await anext(self._events)
            is_token = event.get("type") == "token" and event.get("answer_id") == self._answer_id
            if not (is_token and int(event.get("seq", 0)) <= self._seen):
                return event


class ChatService:
    """Chats and their answers over a store and an LLM."""

    def __init__(
        self,
        store: Store,
        llm: LLM,
        prompts: PromptTemplates | None = None,
        observer: AnswerObserver | None = None,
    ) -> None:
        self.store = store
        self.llm = llm
        self.prompts = prompts
        self.observer = observer

    async def emit(
        self, chat_id: str, event: dict[str, Any], on_event: EventSink | None = None
    ) -> None:
        """Publish ``event`` to the chat's listeners, and hand it to ``on_event``."""
        if on_event is not None:
            await on_event(event)
        try:
            await self.store.publish(chat_channel(chat_id), event)
        except AutoBotError as error:
            # Other listeners miss this event; the answer itself goes on.
            log.warning("event not published", extra=log_fields(error=error.message))

    async def create_chat(self, title: str | None = None) -> Chat:
        return await self.store.create_chat(title)

    async def list_chats(self, limit: int = 100, offset: int = 0) -> list[Chat]:
        """Chats newest first."""
        return await self.store.list_chats(limit, offset)

    async def get_chat(self, chat_id: str) -> Chat:
        return await self.store.get_chat(check_chat_id(chat_id))

    async def chat_with_messages(self, chat_id: str) -> tuple[Chat, list[Message]]:
        chat = await self.get_chat(chat_id)
        return chat, await self.store.get_messages(chat_id)

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat and stop the answer streaming in it, wherever it runs.

        The answer's process hears of it on the chat's control channel and
        cancels it at once (the LLM request is closed, not left generating);
        its listeners get one ``error`` event ``chat_deleted``.
        """
        await self.store.delete_chat(check_chat_id(chat_id))
        try:
            await self.store.publish(
                control_channel(chat_id), {"type": "cancel", "reason": CHAT_DELETED}
            )
        except AutoBotError as error:
            # The answer, if any, finds the chat gone when it tries to store itself.
            log.warning("delete not announced", extra=log_fields(error=error.message))

    def listen(self, chat_id: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Every event of the chat's answers from now on, from any process."""
        return self.store.subscribe(chat_channel(chat_id))

    @asynccontextmanager
    async def join(
        self, chat_id: str, after: tuple[str, int] | None = None
    ) -> AsyncIterator[Joined]:
        """The answer streaming in the chat, if any, and every event after what it holds.

        Subscribes first, then reads the progress: a token recorded before the
        read is in ``progress``, one recorded after comes through ``events``,
        and tokens the progress already holds are dropped from ``events``, so
        a joiner sees every token exactly once (see
        :mod:`autobot.storage._answer_progress`).
        """
        await self.get_chat(chat_id)
        async with self.store.subscribe(chat_channel(chat_id)) as events:
            progress = await self.store.answer_progress(chat_id)
            if progress is None:
                yield Joined(None, events)
            else:
                yield Joined(progress, _TokensAfter(events, progress.answer_id, progress.seq))

    async def _prompt(self, history: Sequence[Message]) -> list[dict[str, str]]:
        prompt: list[dict[str, str]] = []
        if self.prompts is not None:
            try:
                prompt.append(
                    {"role": "system", "content": await self.prompts.get(SYSTEM_PROMPT_TEMPLATE)}
                )
            except NotFound:
                pass
        prompt.extend(
            {"role": message.role, "content": message.content}
            for message in history[-HISTORY_MESSAGES:]
            if message.content
        )
        return prompt

    async def start_answer(
        self,
        chat_id: str,
        content: str,
        model: str | None = None,
        grounding: Grounding | None = None,
    ) -> Answer:
        """Claim the chat and store the user message; the caller then runs the answer.

        With ``grounding``, the answer is grounded in the knowledge base: its
        facts are looked up when it runs (see :meth:`Answer.run`).

        Raises ``NotFound`` (``chat_not_found``), ``ValidationFailed`` for bad
        content, ``Conflict`` (``answer_in_progress``) while another answer runs.
        """
        content = validate_content(content)
        model = validate_model(model)
        check_chat_id(chat_id)
        answer_id = new_id()
        lease = answer_lease(chat_id)
        try:
            opened = await self.store.start_answer(
                chat_id,
                answer_id,
                content,
                lease=lease,
                lease_ttl_s=ANSWER_LEASE_TTL_S,
                history=HISTORY_MESSAGES,
            )
        except NotFound:
            raise
        except BaseException:
            # Cut off after the store may have done it: give the chat back.
            with trio.CancelScope(shield=True):
                await _give_back(self.store, chat_id, answer_id)
            raise
        if opened is None:
            raise Conflict(
                "an answer is already being streamed in this chat", code="answer_in_progress"
            )
        user_message, history = opened
        prompt = await self._prompt(history)
        return Answer(self, chat_id, answer_id, user_message, prompt, model, grounding)

    async def answer(
        self,
        chat_id: str,
        content: str,
        model: str | None = None,
        on_event: EventSink | None = None,
        grounding: Grounding | None = None,
    ) -> Message:
        """:meth:`start_answer` and :meth:`Answer.run` in one call."""
        answer = await self.start_answer(chat_id, content, model, grounding)
        return await answer.run(on_event)

    async def request_cancel(self, chat_id: str) -> None:
        """Ask whichever process runs this chat's answer to stop it."""
        await self.store.publish(control_channel(chat_id), {"type": "cancel"})
