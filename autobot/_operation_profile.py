"""Timeout profiles of long-running operations, and the TOML overrides of them.

A profile says how long one kind of work may take and how often it reports.
It lives on the ground floor (next to the settings, not in
:mod:`autobot.operations`) because the configuration loader validates the
``[operations.<type>]`` tables of the TOML file without loading any operation.

The deadline of one run follows the contract::

    min(max_s, base_s + per_item_s × estimated items)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = [
    "DEFAULT_PROFILES",
    "OPERATION_TYPES",
    "PROFILE_FIELDS",
    "TimeoutProfile",
    "apply_profile_overrides",
    "parse_profile_overrides",
]


def _check_seconds(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        kind = "a number of seconds (0 or more)" if allow_zero else "a positive number of seconds"
        raise ValueError(f"{name}: {value!r} is not {kind}")


@dataclass(frozen=True, slots=True)
class TimeoutProfile:
    """How long one type of operation may run, and how often it saves and reports.

    ``per_item_s`` is also the budget of one item (``OperationContext.item``,
    never less than 1 s): an item that runs longer without a heartbeat fails,
    and counts towards
    ``failure_threshold``, the number of failed items at which the whole
    operation gives up as ``failed``.
    """

    base_s: float
    per_item_s: float
    max_s: float
    checkpoint_interval_s: float
    progress_interval_s: float
    failure_threshold: int

    def __post_init__(self) -> None:
        for name in ("base_s", "per_item_s", "max_s", "checkpoint_interval_s"):
            _check_seconds(name, getattr(self, name))
        _check_seconds("progress_interval_s", self.progress_interval_s, allow_zero=True)
        threshold = self.failure_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError(
                f"failure_threshold: {threshold!r} is not a whole number of at least 1"
            )
        if self.base_s > self.max_s:
            raise ValueError(f"base_s ({self.base_s:g}) is more than max_s ({self.max_s:g})")

    def deadline_s(self, estimated_items: int | None) -> float:
        """``min(max_s, base_s + per_item_s × estimated_items)``; no estimate counts as 0."""
        return min(self.max_s, self.base_s + self.per_item_s * max(0, estimated_items or 0))

    def with_overrides(self, overrides: Mapping[str, Any]) -> TimeoutProfile:
        """This profile with some fields replaced; raises ``ValueError`` naming a bad one."""
        return replace(self, **dict(overrides))

    def to_json(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in PROFILE_FIELDS}


#: The profile's field names, in the contract's order.
PROFILE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TimeoutProfile))


_H = 3600.0
_MIN = 60.0


#: The default profile of every operation type of the contract, in its order. An
#: item is what the type counts: a file, a test file, a request, a fact, a record.
#: Why each number is what it is: docs/operations.md.
DEFAULT_PROFILES: dict[str, TimeoutProfile] = {
    # item: a source file (read, parsed, summarised)
    "codebase_indexing": TimeoutProfile(1 * _H, 10.0, 4 * _H, 30.0, 1.0, 100),
    "code_analysis": TimeoutProfile(30 * _MIN, 5.0, 2 * _H, 30.0, 1.0, 100),
    # item: a manifest or source file whose imports are read
    "dependency_analysis": TimeoutProfile(10 * _MIN, 2.0, 1 * _H, 30.0, 1.0, 50),
    "security_scan": TimeoutProfile(30 * _MIN, 5.0, 2 * _H, 30.0, 1.0, 100),
    # item: one profiled run of a script
    "performance_profiling": TimeoutProfile(15 * _MIN, 5 * _MIN, 1 * _H, 60.0, 2.0, 3),
    # item: one test file run by pytest in a subprocess
    "comprehensive_test_suite": TimeoutProfile(40 * _MIN, 2 * _MIN, 3 * _H, 30.0, 1.0, 20),
    "integration_testing": TimeoutProfile(30 * _MIN, 5 * _MIN, 3 * _H, 30.0, 1.0, 10),
    # item: one timed run of a benchmark script
    "performance_testing": TimeoutProfile(30 * _MIN, 2 * _MIN, 2 * _H, 30.0, 1.0, 5),
    # item: one HTTP request
    "load_testing": TimeoutProfile(10 * _MIN, 0.5, 1 * _H, 30.0, 1.0, 100),
    # item: a text or Markdown file split into facts
    "kb_population": TimeoutProfile(30 * _MIN, 2.0, 2 * _H, 30.0, 1.0, 100),
    # item: a stored fact
    "kb_optimization": TimeoutProfile(10 * _MIN, 0.05, 1 * _H, 60.0, 2.0, 10),
    "vector_indexing": TimeoutProfile(30 * _MIN, 1.0, 4 * _H, 30.0, 2.0, 100),
    # item: a text file
    "semantic_analysis": TimeoutProfile(20 * _MIN, 3.0, 2 * _H, 30.0, 1.0, 100),
    # item: a stored record
    "backup_operation": TimeoutProfile(10 * _MIN, 0.01, 2 * _H, 60.0, 1.0, 1),
    "migration_operation": TimeoutProfile(15 * _MIN, 0.01, 2 * _H, 30.0, 1.0, 1),
    # item: a checkpoint or temporary file removed
    "cleanup_operation": TimeoutProfile(5 * _MIN, 0.1, 30 * _MIN, 30.0, 1.0, 50),
    # item: one sample of health and metrics
    "monitoring_collection": TimeoutProfile(5 * _MIN, 10.0, 1 * _H, 60.0, 1.0, 5),
}

#: Every operation type of the contract, in its order.
OPERATION_TYPES: tuple[str, ...] = tuple(DEFAULT_PROFILES)


def parse_profile_overrides(raw: Any) -> dict[str, dict[str, float | int]]:
    """Validate the TOML ``[operations]`` table: ``{type: {field: value}}``.

    Raises ``ValueError`` naming the key: an unknown type or field, a value
    that is not a positive number, or a profile that the overrides make
    inconsistent (``base_s`` above ``max_s``).
    """
    if not isinstance(raw, dict):
        raise ValueError("must be a table of [operations.<type>] tables")
    overrides: dict[str, dict[str, float | int]] = {}
    for type_name, table in raw.items():
        if type_name not in OPERATION_TYPES:
            raise ValueError(f"{type_name!r} is not an operation type")
        if not isinstance(table, dict):
            raise ValueError(f"{type_name}: must be a table of profile fields")
        for field_name in table:
            if field_name not in PROFILE_FIELDS:
                raise ValueError(
                    f"{type_name}.{field_name}: not a profile field "
                    f"(one of {', '.join(PROFILE_FIELDS)})"
                )
        overrides[type_name] = dict(table)
        try:
            DEFAULT_PROFILES[type_name].with_overrides(table)
        except ValueError as error:
            raise ValueError(f"{type_name}: {error}") from None
    return overrides


def apply_profile_overrides(
    overrides: Mapping[str, Mapping[str, Any]],
) -> dict[str, TimeoutProfile]:
    """Every type's effective profile: the defaults with ``overrides`` applied."""
    return {
        name: profile.with_overrides(overrides.get(name, {}))
        for name, profile in DEFAULT_PROFILES.items()
    }
