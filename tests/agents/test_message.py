"""Strict message parsing, without a store: every bad value is a 422 that says what is allowed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autobot import PayloadTooLarge, ValidationFailed
from autobot.agents import (
    MAX_PAYLOAD_BYTES,
    MAX_TTL_S,
    MessageType,
    Priority,
    agent_name,
    outgoing,
    parse_outgoing,
)

GOOD = {"type": "request", "payload": {"q": 1}, "sender": "cli"}
ALL_TYPES = "'request', 'response', 'broadcast', 'event', 'heartbeat'"
ALL_PRIORITIES = "'low', 'normal', 'high', 'critical'"


def problems(body: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_outgoing(body)
    assert caught.value.status == 422 and caught.value.code == "validation_error"
    return caught.value.details["fields"]


@pytest.mark.parametrize(
    "value",
    [
        "HIGH",
        "Request",
        "REQUEST",
        "MessageType.BROADCAST",
        "broadcast ",
        " event",
        "",
        3,
        0,
        True,
        None,
        1.5,
        ["request"],
        {"type": "request"},
    ],
)
def test_a_type_that_is_not_exactly_a_name_is_refused(value: Any) -> None:
    (problem,) = problems(GOOD | {"type": value})
    assert problem["field"] == "type"
    assert ALL_TYPES in problem["message"]


@pytest.mark.parametrize(
    "value",
    ["HIGH", "High", "Priority.HIGH", "urgent", "", 2, 0, False, None, 1.0, ["high"]],
)
def test_a_priority_that_is_not_exactly_a_name_is_refused(value: Any) -> None:
    (problem,) = problems(GOOD | {"priority": value})
    assert problem["field"] == "priority"
    assert ALL_PRIORITIES in problem["message"]


def test_every_name_is_accepted_and_priority_defaults_only_when_absent() -> None:
    for kind in ("request", "response", "broadcast", "event", "heartbeat"):
        assert parse_outgoing(GOOD | {"type": kind}).type is MessageType(kind)
    for name, priority in [
        ("low", Priority.LOW),
        ("normal", Priority.NORMAL),
        ("high", Priority.HIGH),
        ("critical", Priority.CRITICAL),
    ]:
        assert parse_outgoing(GOOD | {"priority": name}).priority is priority
    assert parse_outgoing(GOOD).priority is Priority.NORMAL


def test_a_missing_type_names_the_field_and_the_values() -> None:
    (problem,) = problems({"payload": 1, "sender": "cli"})
    assert problem["field"] == "type" and ALL_TYPES in problem["message"]
    assert "required" in problem["message"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"type": "HIGH", "priority": None, "sender": "a b", "ttl": 5})
    assert sorted(p["field"] for p in found) == ["payload", "priority", "sender", "ttl", "type"]


@pytest.mark.parametrize("body", [[], "request", 3, None, [GOOD]])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    assert [p["field"] for p in problems(body)] == ["(body)"]


def test_unknown_fields_are_refused_not_ignored() -> None:
    for field in ("recipient", "id", "Type", "ttl", "created_at"):
        (problem,) = problems(GOOD | {field: "x"})
        assert problem["field"] == field


@pytest.mark.parametrize(
    "value", [0, -1, 0.0, MAX_TTL_S + 1, float("inf"), float("nan"), "5", True, None, [5], 10**400]
)
def test_a_ttl_must_be_a_positive_bounded_number(value: Any) -> None:
    (problem,) = problems(GOOD | {"ttl_s": value})
    assert problem["field"] == "ttl_s"


def test_a_ttl_in_range_is_kept() -> None:
    assert parse_outgoing(GOOD | {"ttl_s": 1}).ttl_s == 1.0
    assert parse_outgoing(GOOD | {"ttl_s": 0.001}).ttl_s == 0.001
    assert parse_outgoing(GOOD | {"ttl_s": MAX_TTL_S}).ttl_s == MAX_TTL_S
    assert parse_outgoing(GOOD).ttl_s is None


@pytest.mark.parametrize(
    "name",
    ["a", "planner", "Agent_7", "team.lead", "x-1", "9lives", "a" * 64, "A.b_c-d"],
)
def test_good_agent_names(name: str) -> None:
    assert agent_name(name) == name
    assert parse_outgoing(GOOD | {"sender": name}).sender == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "has space",
        "colon:name",
        "slash/name",
        "back\\slash",
        ".hidden",
        "-dash",
        "_under",
        "..",
        "tab\t",
        "new\nline",
        "nul\x00",
        "é",
        "名前",
        "*",
        3,
        None,
    ],
)
def test_bad_agent_names(name: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        agent_name(name, "recipient")
    assert caught.value.details["fields"][0]["field"] == "recipient"
    (problem,) = problems(GOOD | {"sender": name})
    assert problem["field"] == "sender" and "A-Z a-z 0-9 _ . -" in problem["message"]


def encoded(payload: Any) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())


def test_a_payload_may_be_any_json_value_up_to_the_limit() -> None:
    for payload in (None, 0, "text", [1, {"a": None}], {"nested": {"deep": [True]}}):
        assert parse_outgoing(GOOD | {"payload": payload}).payload == payload
    at_limit = "é" * ((MAX_PAYLOAD_BYTES - 2) // 2)  # two bytes each, plus the quotes
    assert encoded(at_limit) == MAX_PAYLOAD_BYTES
    assert parse_outgoing(GOOD | {"payload": at_limit}).payload == at_limit


def test_a_payload_over_the_limit_is_413() -> None:
    over = "x" * (MAX_PAYLOAD_BYTES - 1)  # 65,535 characters and two quotes
    assert encoded(over) == MAX_PAYLOAD_BYTES + 1
    with pytest.raises(PayloadTooLarge) as caught:
        parse_outgoing(GOOD | {"payload": over})
    assert caught.value.status == 413 and caught.value.code == "payload_too_large"
    assert caught.value.details == {
        "limit_bytes": MAX_PAYLOAD_BYTES,
        "size_bytes": MAX_PAYLOAD_BYTES + 1,
    }


def test_a_field_problem_wins_over_the_size() -> None:
    (problem,) = problems(GOOD | {"type": "HIGH", "payload": "x" * 100_000})
    assert problem["field"] == "type"


def test_python_values_that_are_not_json_are_refused() -> None:
    for payload in ({1, 2}, object(), float("nan"), {"k": b"bytes"}):
        with pytest.raises(ValidationFailed) as caught:
            outgoing(type="event", payload=payload, sender="cli")
        assert caught.value.details["fields"][0]["field"] == "payload"


def test_the_python_api_takes_the_enums_too() -> None:
    message = outgoing(
        type=MessageType.HEARTBEAT, payload=None, sender="cli", priority=Priority.CRITICAL
    )
    assert (message.type, message.priority) == (MessageType.HEARTBEAT, Priority.CRITICAL)
    with pytest.raises(ValidationFailed):
        outgoing(type="event", payload=None, sender="cli", priority=3)
