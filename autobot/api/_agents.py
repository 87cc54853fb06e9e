"""Agent message bus routes: send, broadcast, receive (waiting up to a minute), list agents.

Message bodies are checked by :func:`autobot.agents.parse_outgoing`, the same
rules as the Python API's; the pydantic models here only describe them for
the OpenAPI document. A body larger than :data:`MAX_MESSAGE_BODY_BYTES` is
refused by its ``Content-Length`` before any of it is read.

A receive is not bounded by ``http.request``: it waits as long as its
``wait`` (at most :data:`MAX_WAIT_S`), and the store's own deadlines bound the
steps before and after. Its messages are written by :class:`DeliveryBody`,
which tells the bus whether the response went out; messages whose response
was cancelled (the client left) go back to the inbox, first in their priority.
"""

from __future__ import annotations

import json
import re
from types import TracebackType
from typing import Annotated, Any, Literal

import trio
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from quart import Blueprint, Response, request
from quart.wrappers.response import ResponseBody
from quart_schema import document_request, document_response, validate_querystring
from quart_trio.wrappers import TrioResponse

from .._errors import PayloadTooLarge
from ..agents import (
    AGENT_NAME_RULE,
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    MAX_TTL_S,
    AgentBus,
    Handover,
    agent_name,
    parse_outgoing,
)
from ._context import services
from ._long_running import long_running
from ._query import QueryInt

__all__ = ["MAX_MESSAGE_BODY_BYTES", "MAX_WAIT_S", "DeliveryBody", "agents"]

agents = Blueprint("agents", __name__)

#: The longest a receive may wait, in seconds. Wanted as the deadline scope
#: ``agent.wait`` (the ceiling of a blocking receive).
MAX_WAIT_S = 60.0
#: The largest message body read: the payload's limit plus room for the other
#: fields and for JSON written with spaces or escapes.
MAX_MESSAGE_BODY_BYTES = 4 * MAX_PAYLOAD_BYTES

_PLAIN_SECONDS = re.compile(r"[0-9]{1,5}(\.[0-9]{1,6})?")

TypeName = Literal["request", "response", "broadcast", "event", "heartbeat"]
PriorityName = Literal["low", "normal", "high", "critical"]
AgentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _plain_seconds(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value  # a default, not client input
    if not isinstance(value, str) or not _PLAIN_SECONDS.fullmatch(value):
        raise ValueError("must be a number of seconds written as plain digits (e.g. 5 or 2.5)")
    return float(value)


QuerySeconds = Annotated[float, BeforeValidator(_plain_seconds)]


class MessageBody(BaseModel):
    """A message to send (documentation; ``parse_outgoing`` checks it)."""

    model_config = ConfigDict(extra="forbid")

    type: TypeName
    priority: PriorityName = Field(default="normal", description="normal when absent; not null")
    sender: AgentName = Field(description=AGENT_NAME_RULE)
    payload: Any = Field(description=f"any JSON value, at most {MAX_PAYLOAD_BYTES} bytes encoded")
    ttl_s: float | None = Field(
        default=None, gt=0, le=MAX_TTL_S, description="seconds until it expires; omit for never"
    )


class Sent(BaseModel):
    id: str


class BroadcastSent(BaseModel):
    id: str
    recipients: list[str]
    recipient_count: int


class ReceivedMessage(BaseModel):
    id: str
    type: TypeName
    priority: PriorityName
    sender: str
    recipient: str
    payload: Any
    created_at: str
    ttl_s: float | None


class Received(BaseModel):
    messages: list[ReceivedMessage]


class AgentList(BaseModel):
    agents: list[str]


class ReceiveQuery(BaseModel):
    wait: QuerySeconds = Field(default=0.0, ge=0, le=MAX_WAIT_S)
    max: QueryInt = Field(default=10, ge=1, le=MAX_BATCH)


def _bus() -> AgentBus:
    return services().agents


@agents.before_request
async def refuse_large_bodies() -> None:
    """A message body over the limit is refused before it is read."""
    length = request.content_length
    if length is not None and length > MAX_MESSAGE_BODY_BYTES:
        raise PayloadTooLarge(
            f"a message body is at most {MAX_MESSAGE_BODY_BYTES} bytes (got {length})",
            code="payload_too_large",
            limit_bytes=MAX_MESSAGE_BODY_BYTES,
            size_bytes=length,
        )


@agents.get("/api/agents")
@document_response(AgentList)
async def list_agents() -> dict[str, Any]:
    """The agents registered now: those that received or sent a heartbeat lately."""
    return {"agents": await _bus().agents()}


@agents.post("/api/agents/<agent>/messages")
@document_request(MessageBody)
@document_response(Sent, 202)
async def send_message(agent: str) -> tuple[dict[str, Any], int]:
    """Queue a message for ``agent`` (registered or not)."""
    recipient = agent_name(agent)
    message = parse_outgoing(await request.get_json())
    sent = await _bus().post(recipient, message)
    return {"id": sent.id}, 202


@agents.post("/api/agents/broadcast")
@document_request(MessageBody)
@document_response(BroadcastSent, 202)
async def broadcast() -> tuple[dict[str, Any], int]:
    """Queue one copy of the message for every registered agent, all at once."""
    message = parse_outgoing(await request.get_json())
    sent = await _bus().post_broadcast(message)
    recipients = list(sent.recipients)
    return {"id": sent.id, "recipients": recipients, "recipient_count": len(recipients)}, 202


@agents.get("/api/agents/<agent>/messages")
@validate_querystring(ReceiveQuery)
@document_response(Received)
@long_running
async def receive_messages(agent: str, query_args: ReceiveQuery) -> Response:
    """Up to ``max`` messages, highest priority first, waiting up to ``wait`` seconds for one.

    An empty list when none came in time, or when the server began shutting
    down meanwhile. A client that leaves while waiting takes nothing.
    """
    name = agent_name(agent)
    app_services = services()
    bus = app_services.agents
    handover: Handover | None = None
    if query_args.wait == 0:
        handover = await bus.take(name, query_args.max, block=False)
    else:
        # Shutdown cancels the wait at once: the answer is then an empty list.
        with app_services.long_lived(), trio.move_on_after(query_args.wait):
            handover = await bus.take(name, query_args.max)
    return TrioResponse(DeliveryBody(handover), content_type="application/json")


class DeliveryBody(ResponseBody):
    """The body of a receive: writes its handover's messages and settles it.

    Entered by Quart as it starts sending. Once the messages were written
    (Quart asks for the next chunk), they are delivered; leaving before that,
    with an error or a cancellation (the client went away), abandons them to
    the bus, which hands them back. A write to a connection the client already
    closed does not fail: the cancellation that follows it does, so one
    checkpoint comes between the write and the delivery.
    """

    def __init__(self, handover: Handover | None) -> None:
        self._handover = handover
        self._data = b""
        self._written = False

    async def __aenter__(self) -> DeliveryBody:
        messages = [] if self._handover is None else self._handover.start()
        self._data = json.dumps(
            {"messages": [message.to_json() for message in messages]},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        return self

    def __aiter__(self) -> DeliveryBody:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._written:
            self._written = True
            return self._data
        if self._handover is not None:
            self._handover.delivered()
        raise StopAsyncIteration

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handover is not None:
            self._handover.abandon()  # nothing once delivered
