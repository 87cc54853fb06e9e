"""Agent messages and the rules their fields follow, checked strictly.

A message is what one agent sends another through the bus: a ``type`` and a
``priority`` from short fixed lists, a ``sender``, a JSON ``payload`` and an
optional ``ttl_s``. Whoever builds one (an HTTP client, code in the process)
goes through the same checks, which never guess: ``"HIGH"``,
``"MessageType.BROADCAST"``, ``3`` or a missing ``type`` are each refused with
a 422 that names the field and the values it accepts. ``priority`` is
``normal`` only when it is absent; ``null`` is refused like any other value
that is not a name.

Agent names (a recipient, a sender, the ``{agent}`` of a route) are 1 to 64
characters of ``A-Z a-z 0-9 _ . -``, starting with a letter or a digit. Both
backends build keys from them, and the Redis backend separates the parts of a
key with ``:``; a name with a ``:`` could name another agent's keys, so it is
not allowed.

A payload is at most :data:`MAX_PAYLOAD_BYTES` once encoded as compact UTF-8
JSON; a larger one is 413 ``payload_too_large`` (the size is the problem, not
the shape), with ``limit_bytes`` and ``size_bytes``.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._errors import PayloadTooLarge, ValidationFailed, echo
from ..storage import Priority

__all__ = [
    "AGENT_NAME_RULE",
    "MAX_PAYLOAD_BYTES",
    "MAX_TTL_S",
    "PRIORITY_NAMES",
    "TYPE_NAMES",
    "AgentMessage",
    "MessageType",
    "Outgoing",
    "agent_name",
    "outgoing",
    "parse_outgoing",
]

#: The largest payload, in bytes of compact UTF-8 JSON.
MAX_PAYLOAD_BYTES = 64 * 1024
#: The longest time to live a message may ask for (a day).
MAX_TTL_S = 86_400.0
#: What an agent name may be, in words (error messages and docs say this).
AGENT_NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"

_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class MessageType(enum.StrEnum):
    """What a message is for; the bus treats only ``heartbeat`` specially."""

    REQUEST = "request"
    RESPONSE = "response"
    BROADCAST = "broadcast"
    EVENT = "event"
    HEARTBEAT = "heartbeat"


TYPE_NAMES: tuple[str, ...] = tuple(kind.value for kind in MessageType)
PRIORITY_NAMES: tuple[str, ...] = tuple(p.name.lower() for p in sorted(Priority))
_PRIORITIES = {p.name.lower(): p for p in Priority}
_FIELDS = ("type", "priority", "payload", "sender", "ttl_s")
_REQUIRED = ("type", "payload", "sender")


def _one_of(names: tuple[str, ...]) -> str:
    return "one of " + ", ".join(f"'{name}'" for name in names)


class _Problems:
    """Field problems gathered while checking, raised together as one 422."""

    def __init__(self) -> None:
        self.fields: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.fields.append({"field": field, "message": message})

    def raise_any(self) -> None:
        if self.fields:
            summary = "; ".join(f"{item['field']}: {item['message']}" for item in self.fields)
            raise ValidationFailed(summary, fields=self.fields)


def _check_type(value: object, problems: _Problems) -> MessageType | None:
    if isinstance(value, str) and value in TYPE_NAMES:
        return MessageType(value)
    problems.add("type", f"must be {_one_of(TYPE_NAMES)} (got {echo(value)})")
    return None


def _check_priority(value: object, problems: _Problems) -> Priority | None:
    if isinstance(value, Priority):
        return value
    if isinstance(value, str) and value in _PRIORITIES:
        return _PRIORITIES[value]
    problems.add("priority", f"must be {_one_of(PRIORITY_NAMES)} (got {echo(value)})")
    return None


def _check_name(value: object, field: str, problems: _Problems) -> str | None:
    if isinstance(value, str) and _AGENT_NAME.fullmatch(value):
        return value
    problems.add(field, f"must be an agent name: {AGENT_NAME_RULE} (got {echo(value)})")
    return None


def _check_ttl(value: object, problems: _Problems) -> float | None:
    # NaN compares false and infinity is above the limit: both fail the range.
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_TTL_S:
        return float(value)
    problems.add(
        "ttl_s", f"must be a number of seconds above 0, at most {MAX_TTL_S:g} (got {echo(value)})"
    )
    return None


def _encoded_size(payload: object, problems: _Problems) -> int:
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        problems.add("payload", "must be a JSON value")
        return 0
    return len(text.encode())


def agent_name(value: object, field: str = "agent") -> str:
    """``value`` if it is a valid agent name, else 422 naming ``field``."""
    problems = _Problems()
    name = _check_name(value, field, problems)
    problems.raise_any()
    assert name is not None
    return name


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A checked message before it has an id, a recipient and a time."""

    type: MessageType
    priority: Priority
    sender: str
    payload: Any
    ttl_s: float | None = None


def _checked(values: Mapping[str, Any], problems: _Problems) -> Outgoing:
    kind = _check_type(values["type"], problems) if "type" in values else None
    priority = (
        _check_priority(values["priority"], problems) if "priority" in values else Priority.NORMAL
    )
    sender = _check_name(values["sender"], "sender", problems) if "sender" in values else None
    ttl_s = _check_ttl(values["ttl_s"], problems) if "ttl_s" in values else None
    size = _encoded_size(values["payload"], problems) if "payload" in values else 0
    problems.raise_any()
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"the payload is {size} bytes of JSON; at most {MAX_PAYLOAD_BYTES} are allowed",
            code="payload_too_large",
            limit_bytes=MAX_PAYLOAD_BYTES,
            size_bytes=size,
        )
    assert kind is not None and priority is not None and sender is not None
    return Outgoing(kind, priority, sender, values["payload"], ttl_s)


def parse_outgoing(body: object) -> Outgoing:
    """A message body from a client: exactly the contract's fields, each valid.

    422 ``validation_error`` lists every field that is wrong, missing or
    unknown at once; 413 ``payload_too_large`` when only the size is.
    """
    problems = _Problems()
    if not isinstance(body, dict):
        problems.add("(body)", "must be a JSON object")
        problems.raise_any()
    assert isinstance(body, dict)
    for field in _REQUIRED:
        if field not in body:
            if field == "type":
                problems.add(field, f"is required: {_one_of(TYPE_NAMES)}")
            elif field == "sender":
                problems.add(field, f"is required: an agent name ({AGENT_NAME_RULE})")
            else:
                problems.add(field, "is required: any JSON value")
    for field in body:
        if field not in _FIELDS:
            problems.add(str(field), "is not a field of a message")
    return _checked(body, problems)


def outgoing(
    *,
    type: MessageType | str,
    payload: Any,
    sender: str,
    priority: Priority | str = Priority.NORMAL,
    ttl_s: float | None = None,
) -> Outgoing:
    """The same checks for a message built in Python (``ttl_s=None``: no expiry)."""
    values: dict[str, Any] = {"type": type, "payload": payload, "sender": sender}
    values["priority"] = priority
    if ttl_s is not None:
        values["ttl_s"] = ttl_s
    return _checked(values, _Problems())


def iso_utc(epoch_s: float) -> str:
    """``epoch_s`` as the contract's timestamp (``2026-11-23T04:38:45.123Z``)."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """One message as a receiver gets it.

    A broadcast's copies share one ``id``, so a receiver can tell a copy it
    already saw; ``recipient`` is the agent whose inbox it came from.
    """

    id: str
    type: MessageType
    priority: Priority
    sender: str
    recipient: str
    payload: Any
    created_at: str
    ttl_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "priority": self.priority.name.lower(),
            "sender": self.sender,
            "recipient": self.recipient,
            "payload": self.payload,
            "created_at": self.created_at,
            "ttl_s": self.ttl_s,
        }
