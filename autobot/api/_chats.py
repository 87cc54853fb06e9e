"""Chat routes: CRUD, messages (JSON or server-sent events), WebSocket, legacy routes."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint, Response, request, websocket
from quart_schema import document_response, validate_querystring, validate_request
from quart_trio.wrappers import TrioResponse

from .._errors import AutoBotError, BadRequest, LLMFailure, echo
from .._logging import log_fields
from ..chat import (
    MAX_CONTENT_CHARS,
    Answer,
    ChatDeleted,
    ChatService,
    Grounding,
    validate_detach,
    validate_knowledge,
)
from ..knowledge import MAX_LIMIT
from ..storage import Chat, Message
from ._context import services
from ._event_stream import SSEvent, event_stream_response
from ._json_body import parse_json
from ._long_running import long_running
from ._openapi import ErrorDetail, errors, event_stream, openapi_extra, websocket_messages
from ._query import QueryInt

__all__ = ["chats"]

log = logging.getLogger("autobot.api")

chats = Blueprint("chats", __name__)

# The furthest a page of chats may start; beyond it a client is not paging.
MAX_OFFSET = 1_000_000_000


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


class NewChat(BaseModel):
    title: str | None = Field(default=None, max_length=200)


class NewMessage(BaseModel):
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    stream: StrictBool = False
    model: str | None = Field(default=None, min_length=1, max_length=200)
    knowledge: StrictBool = False
    detach: StrictBool = Field(
        default=False,
        description="run the answer to its end even if this client leaves; "
        "join it again through the WebSocket or GET /api/chats/{id}/stream",
    )

    _content_not_blank = field_validator("content")(_not_blank)


class ChatListQuery(BaseModel):
    limit: QueryInt = Field(default=100, ge=1, le=1000)
    offset: QueryInt = Field(default=0, ge=0, le=MAX_OFFSET)


class ChatIdQuery(BaseModel):
    chat_id: str = Field(min_length=1)


class LegacyMessage(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    chat_id: str | None = None
    knowledge: StrictBool = False

    _message_not_blank = field_validator("message")(_not_blank)


# -- response models (the OpenAPI document's; the storage records make the bodies) ---------


class ChatInfo(BaseModel):
    id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int


class Source(BaseModel):
    """A fact given to the model for a grounded answer."""

    id: str
    score: float


class KnowledgeError(BaseModel):
    """Why a grounded answer has no sources: its search failed or expired."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ChatMessage(BaseModel):
    """A stored message; ``sources``/``knowledge_error`` only on grounded answers."""

    id: str
    role: Literal["user", "assistant"]
    content: str
    created_at: str
    status: Literal["complete", "cancelled", "failed"]
    sources: list[Source] | SkipJsonSchema[None] = None
    knowledge_error: KnowledgeError | SkipJsonSchema[None] = None


class ChatList(BaseModel):
    chats: list[ChatInfo]


class ChatCreated(BaseModel):
    chat: ChatInfo


class ChatDetail(BaseModel):
    chat: ChatInfo
    messages: list[ChatMessage]


class AnswerMessage(BaseModel):
    """The assistant's answer, stored (not streamed)."""

    message: ChatMessage


class LegacyAnswerMessage(BaseModel):
    message: ChatMessage
    chat_id: str


class TokenEvent(BaseModel):
    """SSE ``token`` / WebSocket ``token``: the next piece of the answer."""

    type: Literal["token"] | SkipJsonSchema[None] = Field(
        default=None, description="WebSocket only"
    )
    delta: str
    seq: int = Field(description="the token's position in the answer, from 1")
    answer_id: str | SkipJsonSchema[None] = Field(default=None, description="WebSocket only")


class SnapshotMessage(BaseModel):
    id: str
    role: Literal["assistant"]
    status: Literal["streaming"]
    content: str


class SnapshotEvent(BaseModel):
    """SSE ``snapshot`` / WebSocket ``snapshot``: the answer in progress so far, for a joiner."""

    type: Literal["snapshot"] | SkipJsonSchema[None] = Field(
        default=None, description="WebSocket only"
    )
    message: SnapshotMessage
    seq: int


class DoneEvent(BaseModel):
    """SSE ``done`` / WebSocket ``done`` (or ``cancelled``): the stored answer."""

    type: Literal["done", "cancelled"] | SkipJsonSchema[None] = Field(
        default=None, description="WebSocket only"
    )
    message: ChatMessage


class ErrorEvent(BaseModel):
    """SSE ``error`` / WebSocket ``error``: the answer failed (stored as far as it came)."""

    type: Literal["error"] | SkipJsonSchema[None] = Field(
        default=None, description="WebSocket only"
    )
    error: ErrorDetail
    message: ChatMessage | None = None


class ClientMessage(BaseModel):
    """WebSocket ``message``: ask for an answer."""

    type: Literal["message"]
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    model: str | None = None
    knowledge: bool = False
    detach: bool = False


class ClientCancel(BaseModel):
    """WebSocket ``cancel``: stop the answer in progress, for every client."""

    type: Literal["cancel"]


_EVENT_STREAM = {
    "responses": {
        "200": {
            "description": 'the answer: JSON, or with "stream": true server-sent events'
            " (`token`, then `done` or `error`; `: keepalive` comments)",
            "content": {
                "text/event-stream": event_stream(
                    {"token": TokenEvent, "done": DoneEvent, "error": ErrorEvent}
                )
            },
        }
    }
}

_NO_CONTENT = {"responses": {"204": {"description": "deleted"}}}

_ATTACH = {
    "responses": {
        "200": {
            "description": "the answer in progress: `snapshot` (or, with Last-Event-ID, the "
            "tokens after it), `token` events, then `done` or `error`; each with "
            "`id: <answer id>:<seq>`",
            "content": {
                "text/event-stream": event_stream(
                    {
                        "snapshot": SnapshotEvent,
                        "token": TokenEvent,
                        "done": DoneEvent,
                        "error": ErrorEvent,
                    }
                )
            },
        },
        "204": {"description": "no answer is in progress"},
    }
}


def _chat_service() -> ChatService:
    return services().chat


def _grounding(knowledge: bool) -> Grounding | None:
    """Where an answer asked for with ``"knowledge": true`` finds its facts; else None."""
    if not knowledge:
        return None
    app_services = services()
    limit = min(app_services.settings.kb_context_facts, MAX_LIMIT)
    return Grounding(app_services.knowledge, limit)


async def _chat_detail(chat_id: str) -> dict[str, Any]:
    chat, messages = await _chat_service().chat_with_messages(chat_id)
    return {"chat": chat.to_json(), "messages": [message.to_json() for message in messages]}


async def _delete(chat_id: str) -> Response:
    await _chat_service().delete_chat(chat_id)
    return TrioResponse(status=204)


# -- chats ---------------------------------------------------------------------------------


@chats.get("/api/list_sessions")  # AutoBot's legacy names for the same list
@chats.get("/api/chat_sessions")
@chats.get("/api/chats")
@validate_querystring(ChatListQuery)
@document_response(ChatList)
async def list_chats(query_args: ChatListQuery) -> dict[str, Any]:
    """Chats, newest first (``limit`` up to 1000, ``offset``)."""
    listed = await _chat_service().list_chats(query_args.limit, query_args.offset)
    return {"chats": [chat.to_json() for chat in listed]}


@chats.post("/api/chats")
@validate_request(NewChat)
@document_response(ChatCreated, 201)
async def create_chat(data: NewChat) -> tuple[dict[str, Any], int]:
    chat: Chat = await _chat_service().create_chat(data.title)
    return {"chat": chat.to_json()}, 201


@chats.get("/api/chats/<chat_id>")
@document_response(ChatDetail)
async def get_chat(chat_id: str) -> dict[str, Any]:
    return await _chat_detail(chat_id)


@chats.delete("/api/chats/<chat_id>")
@openapi_extra(_NO_CONTENT)
async def delete_chat(chat_id: str) -> Response:
    return await _delete(chat_id)


# -- messages --------------------------------------------------------------------------------


def _sse_name_and_data(event: dict[str, Any]) -> SSEvent:
    kind = event["type"]
    if kind == "token":
        data = {"delta": event["delta"], "seq": event["seq"]}
        return "token", data, f"{event['answer_id']}:{event['seq']}"
    if kind == "snapshot":
        data = {"message": event["message"], "seq": event["seq"]}
        return "snapshot", data, f"{event['message']['id']}:{event['seq']}"
    if kind == "done":
        return "done", {"message": event["message"]}
    if kind == "cancelled":
        error = {"code": "answer_cancelled", "message": "the answer was cancelled"}
        return "error", {"error": error, "message": event["message"]}
    return "error", {"error": event["error"], "message": event.get("message")}


def _stream_answer(answer: Answer) -> Response:
    # The body is produced after the handler returned, outside the app context.
    app_services = services()

    async def produce(send: trio.MemorySendChannel[SSEvent]) -> None:
        async def forward(event: dict[str, Any]) -> None:
            try:
                await send.send(_sse_name_and_data(event))
            except trio.BrokenResourceError:
                pass  # the client is gone; the answer is finishing without it

        with app_services.long_lived():
            try:
                await answer.run(forward)
            except (LLMFailure, ChatDeleted):
                pass  # already sent as the stream's error event (and stored, if the chat is)
            except AutoBotError as error:  # the store failed while finishing
                await send.send(("error", error.to_body()))

    return event_stream_response(produce)


@chats.post("/api/chats/<chat_id>/messages")
@validate_request(NewMessage)
@document_response(AnswerMessage)
@openapi_extra(_EVENT_STREAM)
@errors(409, 502)
@long_running
async def post_message(chat_id: str, data: NewMessage) -> Any:
    """Ask for an answer: JSON when the answer is complete, or a stream of events.

    Not bounded by ``http.request``: an answer takes as long as ``llm.*`` allow.
    With ``"knowledge": true`` it is grounded in the knowledge base; the
    message (in ``done``, or the JSON answer) carries ``sources``.
    """
    answer = await _chat_service().start_answer(
        chat_id, data.content, data.model, _grounding(data.knowledge)
    )
    if data.detach:
        await _detach(answer)
        if data.stream:
            return _follow_response(chat_id, (answer.id, 0))
        return {"message": await _final_message(chat_id, answer.id)}
    if data.stream:
        return _stream_answer(answer)
    message = await answer.run()
    return {"message": message.to_json()}


async def _detach(answer: Answer) -> None:
    """Hand ``answer`` to the app's lifespan: its client leaving no longer cancels it."""
    try:
        services().detached.start(answer)
    except AutoBotError:
        with trio.CancelScope(shield=True):
            await answer.abandon()
        raise


_FINAL = frozenset(("done", "cancelled", "error"))


async def _stored_answer(service: ChatService, chat_id: str) -> dict[str, Any] | None:
    """The chat's last stored answer (what a finished answer left), as JSON."""
    messages = await service.store.get_messages(chat_id)
    answers = [message for message in messages if message.role == "assistant"]
    return answers[-1].to_json() if answers else None


def _final_of(message: dict[str, Any]) -> dict[str, Any]:
    kind = {"complete": "done", "cancelled": "cancelled"}.get(message["status"], "error")
    if kind == "error":
        error = {"code": "answer_failed", "message": "the answer failed"}
        return {"type": "error", "error": error, "message": message}
    return {"type": kind, "message": message}


async def _final_message(chat_id: str, answer_id: str) -> dict[str, Any]:
    """Wait for answer ``answer_id`` to end; the stored answer (a detached JSON request)."""
    service = _chat_service()
    async with service.join(chat_id) as joined:
        if joined.progress is not None and joined.progress.answer_id == answer_id:
            async for event in joined.events:
                if event.get("type") in _FINAL:
                    if "message" in event:
                        return dict(event["message"])
                    raise ChatDeleted("the chat was deleted while the answer ran")
    stored = await _stored_answer(service, chat_id)
    if stored is None:
        raise ChatDeleted("the chat was deleted while the answer ran")
    return stored


async def _relay(
    service: ChatService,
    chat_id: str,
    resume: tuple[str, int] | None,
    send: trio.MemorySendChannel[SSEvent],
) -> None:
    """Send the answer in progress to a joiner, from a snapshot or resuming after ``resume``.

    ``resume=(answer id, seq)``: the client has that answer's tokens up to
    ``seq``; it gets the rest as token events. Otherwise a ``snapshot`` first.
    An answer that ended before the join is sent as its stored final event.
    """
    async with service.join(chat_id) as joined:
        progress = joined.progress
        if progress is None or (resume is not None and resume[0] != progress.answer_id):
            stored = await _stored_answer(service, chat_id)
            if stored is not None and resume is not None:
                await send.send(_sse_name_and_data(_final_of(stored)))
            return
        if resume is not None:
            for seq in range(resume[1] + 1, progress.seq + 1):
                token = {"delta": progress.tokens[seq - 1], "seq": seq}
                await send.send(("token", token, f"{progress.answer_id}:{seq}"))
        else:
            snapshot = joined.snapshot()
            assert snapshot is not None
            await send.send(_sse_name_and_data(snapshot))
        async for event in joined.events:
            if event.get("type") == "token" and event.get("answer_id") != progress.answer_id:
                continue  # a later answer's: this stream follows one answer
            await send.send(_sse_name_and_data(event))
            if event.get("type") in _FINAL:
                return


def _follow_response(chat_id: str, resume: tuple[str, int] | None) -> Response:
    # The body is produced after the handler returned, outside the app context.
    app_services, service = services(), _chat_service()

    async def produce(send: trio.MemorySendChannel[SSEvent]) -> None:
        with app_services.long_lived():
            try:
                await _relay(service, chat_id, resume, send)
            except trio.BrokenResourceError:
                pass  # the client left; a joiner leaving changes nothing
            except AutoBotError as error:
                await send.send(("error", error.to_body()))

    return event_stream_response(produce)


def _last_event_id(value: str | None) -> tuple[str, int] | None:
    """``<answer id>:<seq>`` from a ``Last-Event-ID`` header; None when absent or not one."""
    if not value:
        return None
    answer_id, _, seq = value.strip().rpartition(":")
    if not answer_id or not seq.isdigit():
        return None
    return answer_id, int(seq)


@chats.get("/api/chats/<chat_id>/stream")
@openapi_extra(_ATTACH)
@errors(404)
@long_running
async def attach(chat_id: str) -> Response:
    """Join the answer in progress: ``snapshot``, then its tokens, then its end; 204 when none.

    Events carry ``id: <answer id>:<seq>``; a reconnect with ``Last-Event-ID``
    gets only the tokens after that one (and the end, if the answer ended
    meanwhile). A joiner leaving does not cancel the answer.
    """
    resume = _last_event_id(request.headers.get("Last-Event-ID"))
    service = _chat_service()
    chat = await service.get_chat(chat_id)
    if resume is None and await service.store.answering(chat.id) is None:
        return TrioResponse(status=204)
    return _follow_response(chat_id, resume)


# -- WebSocket --------------------------------------------------------------------------------


def _ws_error(error: AutoBotError) -> dict[str, Any]:
    return {"type": "error", **error.to_body()}


async def _send_json(data: dict[str, Any]) -> None:
    await websocket.send(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


async def _run_answer(answer: Answer) -> None:
    try:
        await answer.run()
    except (LLMFailure, ChatDeleted):
        pass  # every listener got the error event (and it is stored, if the chat is)
    except AutoBotError as error:
        await _send_json(_ws_error(error))


async def _handle_client_message(
    raw: str | bytes, chat_id: str, service: ChatService, nursery: trio.Nursery
) -> None:
    message = parse_json(raw, "the message")
    if not isinstance(message, dict):
        raise BadRequest("a message must be a JSON object", code="invalid_message")
    kind = message.get("type")
    if kind == "message":
        knowledge = validate_knowledge(message.get("knowledge", False))
        detach = validate_detach(message.get("detach", False))
        answer = await service.start_answer(
            chat_id, message.get("content"), message.get("model"), _grounding(knowledge)
        )
        if detach:
            await _detach(answer)
        else:
            nursery.start_soon(_run_answer, answer)
    elif kind == "cancel":
        await service.request_cancel(chat_id)
    else:
        raise BadRequest(
            f"unknown message type {echo(kind)}; expected 'message' or 'cancel'",
            code="unknown_message_type",
        )


async def _forward_events(events: Any) -> None:
    async for event in events:
        await _send_json(event)


@chats.websocket("/api/chats/<chat_id>/ws")
@websocket_messages(
    "Every event of the chat's answers, for every client connected to it (any process).",
    client={"message": ClientMessage, "cancel": ClientCancel},
    server={
        "snapshot": SnapshotEvent,
        "token": TokenEvent,
        "done": DoneEvent,
        "cancelled": DoneEvent,
        "error": ErrorEvent,
    },
)
async def chat_socket(chat_id: str) -> None:
    """Every client of a chat gets every event of its answers, from any process.

    A client that connects while an answer streams gets its ``snapshot``
    first, then every later token once. Answers started here run in this
    connection's nursery: when the client that asked goes away, its answer
    is cancelled (and stored as such), unless it asked with ``"detach": true``.
    """
    service = _chat_service()
    async with service.join(chat_id) as joined:  # NotFound refuses the handshake with 404
        await websocket.accept()
        with services().long_lived():
            snapshot = joined.snapshot()
            if snapshot is not None:
                await _send_json(snapshot)
            await _serve_socket(chat_id, service, joined.events)


async def _serve_socket(chat_id: str, service: ChatService, events: Any) -> None:
    """Forward the chat's events to the client while handling what the client sends."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_forward_events, events)
        while True:
            raw = await websocket.receive()
            try:
                await _handle_client_message(raw, chat_id, service, nursery)
            except AutoBotError as error:
                log.info("websocket message refused", extra=log_fields(code=error.code))
                await _send_json(_ws_error(error))


# -- AutoBot legacy routes ----------------------------------------------------------------------


@chats.get("/api/history")
@validate_querystring(ChatIdQuery)
@document_response(ChatDetail)
@errors(404)
async def legacy_history(query_args: ChatIdQuery) -> dict[str, Any]:
    return await _chat_detail(query_args.chat_id)


@chats.delete("/api/delete_session")
@validate_querystring(ChatIdQuery)
@openapi_extra(_NO_CONTENT)
@errors(404)
async def legacy_delete_session(query_args: ChatIdQuery) -> Response:
    return await _delete(query_args.chat_id)


@chats.post("/api/send_message")
@validate_request(LegacyMessage)
@document_response(LegacyAnswerMessage)
@errors(404, 409, 502)
@long_running
async def legacy_send_message(data: LegacyMessage) -> dict[str, Any]:
    """Like ``POST /api/chats/<id>/messages`` (not streamed), creating the chat if needed."""
    service = _chat_service()
    if data.chat_id is None:
        chat_id = (await service.create_chat(data.message[:60])).id
    else:
        chat_id = data.chat_id
    message: Message = await service.answer(
        chat_id, data.message, grounding=_grounding(data.knowledge)
    )
    return {"message": message.to_json(), "chat_id": chat_id}
