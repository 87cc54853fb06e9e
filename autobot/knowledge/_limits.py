"""What a fact may hold, checked before anything is stored.

The limits are the API contract's: ``text`` 1 to :data:`MAX_TEXT_CHARS`
characters (not only whitespace: a fact without a word can never be found),
``metadata`` a JSON object of at most :data:`MAX_METADATA_BYTES` bytes encoded
(compact UTF-8), a batch 1 to :data:`MAX_BATCH` facts. A batch is checked
whole before any of it is written, so a bad fact anywhere stores none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ValidationFailed

__all__ = [
    "MAX_BATCH",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "NewFact",
    "check_batch",
    "check_fact",
]

MAX_TEXT_CHARS = 65_536
MAX_METADATA_BYTES = 4_096
MAX_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class NewFact:
    """A fact to add: its text and the caller's metadata (a JSON object)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _problems(fact: NewFact, prefix: str) -> list[dict[str, str]]:
    problems = []
    text = fact.text
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT_CHARS:
        problems.append(
            {"field": f"{prefix}text", "message": f"must be 1 to {MAX_TEXT_CHARS} characters"}
        )
    elif not text.strip():
        problems.append({"field": f"{prefix}text", "message": "must not be only whitespace"})
    metadata = fact.metadata
    if not isinstance(metadata, dict):
        problems.append({"field": f"{prefix}metadata", "message": "must be a JSON object"})
    else:
        try:
            encoded = json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            problems.append({"field": f"{prefix}metadata", "message": "must be JSON"})
        else:
            if len(encoded) > MAX_METADATA_BYTES:
                problems.append(
                    {
                        "field": f"{prefix}metadata",
                        "message": f"must be at most {MAX_METADATA_BYTES} bytes as JSON "
                        f"(got {len(encoded)})",
                    }
                )
    return problems


def _refuse(problems: list[dict[str, str]]) -> ValidationFailed:
    shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return ValidationFailed(shown + more, fields=problems)


def check_fact(fact: NewFact) -> None:
    """``ValidationFailed`` (with ``fields``) unless ``fact`` is within the limits."""
    problems = _problems(fact, "")
    if problems:
        raise _refuse(problems)


def check_batch(facts: Sequence[NewFact]) -> None:
    """Check a whole batch; the fields are named ``facts.<n>.text`` / ``.metadata``."""
    if not 1 <= len(facts) <= MAX_BATCH:
        raise _refuse(
            [{"field": "facts", "message": f"must hold 1 to {MAX_BATCH} facts (got {len(facts)})"}]
        )
    problems = [p for n, fact in enumerate(facts) for p in _problems(fact, f"facts.{n}.")]
    if problems:
        raise _refuse(problems)
