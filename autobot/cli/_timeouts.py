"""``autobot timeouts``: the observed latency of every deadline scope, and suggested budgets.

The numbers come from a running server's ``GET /api/deadlines``, so they are
that process's observations since it started (the suggestions follow
:func:`autobot.suggest_budget`: twice the p99 once 50 operations were seen).
``--write FILE`` turns the suggestions into a TOML file that ``AUTOBOT_CONFIG``
loads, closing the tuning loop: run traffic, read the table, write the file,
restart with it, compare.

What the file holds: each scope whose suggested budget differs from the
code's default (a suggestion equal to the default needs no line, and keeping
it out lets a later release's default apply). The settings loader insists on
a few orderings (``health.check`` shorter than ``health``, a heartbeat shorter
than the lease or presence it renews); where the suggestions break one, the
longer budget is raised, keeping the default ratio between the two, rather
than the shorter one lowered below what was observed. The file is checked by
loading it with the same loader the server uses before it replaces ``FILE``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from .._config import DEADLINE_ORDER, ConfigError, load_settings
from .._deadlines import SCOPES
from ._client import EXIT_USAGE, ClientError, ServerClient, run_async
from ._output import console, format_seconds

__all__ = [
    "MARKER",
    "fetch_deadlines",
    "print_deadlines",
    "run_timeouts",
    "suggested_budgets",
    "write_toml",
]

#: The first line of a file ``--write`` made; such a file may be replaced by the next run.
MARKER = "# Deadline budgets written by `autobot timeouts --write`."

_DEFAULTS = {spec.name: spec.default_s for spec in SCOPES}
# (shorter, longer): the settings loader refuses a file in which shorter >= longer.
_ORDERED = tuple((shorter, longer) for shorter, longer, _ in DEADLINE_ORDER)


async def fetch_deadlines(client: ServerClient) -> dict[str, dict[str, Any]]:
    """``/api/deadlines``'s scopes, in the server's order."""
    body = await client.request("GET", "/api/deadlines")
    scopes = body.get("scopes") if isinstance(body, dict) else None
    if not isinstance(scopes, dict):
        raise ClientError(f"{client.url}/api/deadlines did not answer a table of scopes")
    return scopes


def _suggestion_cell(stats: Mapping[str, Any]) -> Text:
    budget, suggested = stats["budget_s"], stats["suggested_s"]
    text = format_seconds(suggested)
    if math.isclose(suggested, budget):
        return Text(text)
    return Text(f"{text} {'↑' if suggested > budget else '↓'}", style="bold yellow")


def print_deadlines(scopes: Mapping[str, Mapping[str, Any]], *, url: str) -> None:
    """The table: scope, budget, count, expired, p50, p99, max, suggested."""
    table = Table(title=f"Deadlines observed by {url}", title_justify="left")
    table.add_column("scope", no_wrap=True)
    for name in ("budget", "count", "expired", "p50", "p99", "max", "suggested"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, stats in scopes.items():
        seen = stats["count"] > 0
        expired = Text(str(stats["expired"]), style="bold red" if stats["expired"] else "")
        table.add_row(
            name,
            format_seconds(stats["budget_s"]),
            str(stats["count"]),
            expired,
            format_seconds(stats["p50_s"]) if seen else "-",
            format_seconds(stats["p99_s"]) if seen else "-",
            format_seconds(stats["max_s"]) if seen else "-",
            _suggestion_cell(stats),
        )
    console().print(table)


def _round_up(seconds: float) -> float:
    """Up to two significant digits, as the server rounds its suggestions."""
    exponent = math.floor(math.log10(seconds)) - 1
    step = 10.0**exponent
    return round(math.ceil(seconds / step - 1e-9) * step, max(0, -exponent))


def _plan(scopes: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """The budgets to write, and a note for each budget moved to keep an ordering."""
    wanted = {
        name: float(stats["suggested_s"])
        for name, stats in scopes.items()
        if name in _DEFAULTS and not math.isclose(stats["suggested_s"], _DEFAULTS[name])
    }
    notes: dict[str, str] = {}
    for shorter, longer in _ORDERED:
        short_s = wanted.get(shorter, _DEFAULTS[shorter])
        long_s = wanted.get(longer, _DEFAULTS[longer])
        if short_s >= long_s:
            raised = _round_up(short_s * _DEFAULTS[longer] / _DEFAULTS[shorter])
            notes[longer] = (
                f"suggested {format_seconds(long_s)}, raised to {format_seconds(raised)}: "
                f"it must stay longer than {shorter} ({format_seconds(short_s)})"
            )
            if math.isclose(raised, _DEFAULTS[longer]):
                wanted.pop(longer, None)
            else:
                wanted[longer] = raised
    return wanted, notes


def suggested_budgets(scopes: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Scope → seconds for the file, from ``/api/deadlines``'s scopes (see the module doc).

    Scopes this version does not know (a newer server) are left out: the
    loader would refuse them.
    """
    return _plan(scopes)[0]


def _toml_text(scopes: Mapping[str, Mapping[str, Any]], url: str) -> tuple[str, dict[str, float]]:
    budgets, notes = _plan(scopes)
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines = [
        MARKER,
        f"# From the latencies {url} observed (GET /api/deadlines), {stamp}.",
        "# Load it with AUTOBOT_CONFIG=<this file>; see docs/deadlines.md and docs/cli.md.",
        "",
        "[deadlines]",
    ]
    for name, note in notes.items():
        if name not in budgets:
            lines.append(f"# {name}: {note}; the default stays")
    for name, seconds in budgets.items():
        stats = scopes.get(name, {})
        if stats.get("count"):
            lines.append(
                f"# {name}: budget {stats['budget_s']:g} s, {stats['count']} seen, "
                f"p99 {format_seconds(stats['p99_s'])}, {stats['expired']} expired"
            )
        if name in notes:
            lines.append(f"# {name}: {notes[name]}")
        lines.append(f'"{name}" = {float(seconds)!r}')
    return "\n".join(lines) + "\n", budgets


def write_toml(
    path: Path, scopes: Mapping[str, Mapping[str, Any]], *, url: str, force: bool = False
) -> dict[str, float]:
    """Write the suggested budgets to ``path`` as a ``[deadlines]`` table; return them.

    The file is written beside ``path`` and renamed over it once the settings
    loader accepted it. An existing file that ``--write`` did not make is
    only replaced with ``force`` (it may be a configuration with other keys).
    """
    if path.exists() and not force:
        with path.open(encoding="utf-8", errors="replace") as existing:
            if existing.readline().rstrip("\n") != MARKER:
                raise ClientError(
                    f"{path} exists and was not written by `autobot timeouts --write`; "
                    "pass --force to replace it, or choose another file",
                    EXIT_USAGE,
                )
    text, budgets = _toml_text(scopes, url)
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        try:
            load_settings({"AUTOBOT_CONFIG": temporary})
        except ConfigError as error:
            raise ClientError(f"the suggested budgets do not load: {error}") from None
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return budgets


def run_timeouts(url: str, token: str | None, write: Path | None, *, force: bool = False) -> int:
    """The command: print the table, then write the file if asked (after the network part)."""

    async def fetch() -> tuple[str, dict[str, dict[str, Any]]]:
        async with ServerClient(url, token) as client:
            return client.url, await fetch_deadlines(client)

    base_url, scopes = run_async(fetch)
    print_deadlines(scopes, url=base_url)
    if write is not None:
        try:
            budgets = write_toml(write, scopes, url=base_url, force=force)
        except OSError as error:
            raise ClientError(f"cannot write {write}: {error.strerror or error}") from None
        if budgets:
            print(f"wrote {len(budgets)} budgets to {write}: " + ", ".join(budgets))
        else:
            print(f"wrote {write}: every suggestion is the default budget")
    return 0
