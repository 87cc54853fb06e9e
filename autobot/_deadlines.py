"""Named deadline scopes: the one table that says how long anything may take.

Code never writes a number of seconds next to a wait. It names what it is doing::

    with deadline("redis.command"):
        reply = await connection.read_reply()

:func:`deadline` opens a :class:`trio.CancelScope` whose deadline is the scope's
budget from now. Scopes nest the way Trio's do: an inner scope can only shorten
the time left, never extend an enclosing one, because the enclosing scope keeps
its own deadline. When *this* scope's budget runs out, the ``Cancelled`` it
catches is replaced by :class:`DeadlineExceeded` naming the scope and budget.
When an enclosing scope fires first, its own error names it instead.

Every scope records how long its blocks took in a fixed-size histogram, so the
table can report p50/p99/max and a suggested budget (see :func:`suggest_budget`)
for operators tuning ``AUTOBOT_DEADLINE_<SCOPE>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import TracebackType

import trio
from trio.lowlevel import RunVar

from ._errors import DeadlineExceeded
from ._latency import LatencyHistogram, LatencySummary

__all__ = [
    "SCOPES",
    "DeadlinePhase",
    "DeadlineScope",
    "DeadlineTable",
    "ScopeSpec",
    "UnknownDeadlineScope",
    "current_deadlines",
    "deadline",
    "install_deadlines",
    "phased_deadline",
    "suggest_budget",
]


@dataclass(frozen=True, slots=True)
class ScopeSpec:
    """One row of the scope table: a name, its default budget and what it bounds."""

    name: str
    default_s: float
    bounds: str

    @property
    def env_var(self) -> str:
        """``llm.first_token`` → ``AUTOBOT_DEADLINE_LLM_FIRST_TOKEN``."""
        return "AUTOBOT_DEADLINE_" + self.name.upper().replace(".", "_")


SCOPES: tuple[ScopeSpec, ...] = (
    ScopeSpec("redis.connect", 1.0, "opening one Redis connection (TCP, AUTH, SELECT)"),
    ScopeSpec("redis.command", 2.0, "one Redis command or pipeline round trip"),
    ScopeSpec("redis.pool", 1.0, "waiting for a free pooled Redis connection when all are busy"),
    ScopeSpec(
        "redis.probe",
        0.1,
        "one background PING of a Redis endpoint, an idle connection, or Redis while "
        "its circuit is open (connecting first where needed)",
    ),
    ScopeSpec("redis.sentinel", 0.5, "asking one Sentinel for the current master"),
    ScopeSpec(
        "redis.blocking",
        2.0,
        "a blocking command's reply (BLPOP, XREAD BLOCK) after its server-side timeout ran out",
    ),
    ScopeSpec("llm.connect", 5.0, "connecting to the LLM provider"),
    ScopeSpec("llm.first_token", 120.0, "request sent to the first streamed token"),
    ScopeSpec("llm.idle", 30.0, "the longest silence between two streamed chunks"),
    ScopeSpec("llm.total", 600.0, "one whole answer from the LLM"),
    ScopeSpec("llm.models", 10.0, "listing the LLM provider's models, once connected"),
    ScopeSpec("llm.close", 1.0, "closing an LLM response's connection, shielded from cancellation"),
    ScopeSpec("file.io", 10.0, "one file read/write step (a chunk, a rename, a listing)"),
    ScopeSpec("kb.search", 10.0, "one knowledge search"),
    ScopeSpec(
        "kb.answer_context",
        1.0,
        "finding the facts for an answer grounded in the knowledge base; on expiry the "
        "answer goes on without them",
    ),
    ScopeSpec(
        "kb.embed",
        30.0,
        "one batch of texts embedded by the LLM provider's embeddings endpoint",
    ),
    ScopeSpec("kb.fetch", 15.0, "fetching one page for the knowledge base"),
    ScopeSpec("health", 2.0, "the whole /api/health answer"),
    ScopeSpec("health.check", 1.5, "one health check; must be shorter than 'health'"),
    ScopeSpec(
        "health.wait",
        0.25,
        "how long a health request waits for a probe of a dependency that can come back by "
        "itself (Redis, the LLM), from the probe's start; the probe goes on after it",
    ),
    ScopeSpec("http.request", 30.0, "any non-streaming HTTP handler"),
    ScopeSpec("http.body", 60.0, "receiving one whole request body from the client"),
    ScopeSpec(
        "http.body_idle",
        30.0,
        "the longest silence while a streamed upload's body arrives (a whole upload may "
        "take as long as it keeps sending)",
    ),
    ScopeSpec(
        "client.close",
        1.0,
        "a command-line client closing its WebSocket to the server (a server that hangs "
        "on the close handshake is left behind)",
    ),
    ScopeSpec("service.start", 10.0, "opening the app's services at start-up"),
    ScopeSpec("service.stop", 5.0, "closing the app's services at shutdown"),
    ScopeSpec("server.shutdown", 3.0, "open connections finishing after SIGTERM/SIGINT"),
    ScopeSpec(
        "operation.run",
        86400.0,
        "one run of a long-running operation; each run's budget comes from its type's "
        "timeout profile, and this is the ceiling no profile can raise it above",
    ),
    ScopeSpec(
        "operation.item",
        86400.0,
        "one item of an operation, renewed by each heartbeat; the budget is the type's "
        "per_item_s, and this is its ceiling",
    ),
    ScopeSpec(
        "operation.lease",
        10.0,
        "how long an operation's lease outlives its owner's last heartbeat: after it, "
        "another process adopts the operation",
    ),
    ScopeSpec(
        "operation.heartbeat",
        3.0,
        "the period of lease renewals, and of the search for operations to adopt; "
        "must be shorter than 'operation.lease'",
    ),
    ScopeSpec(
        "agent.presence",
        30.0,
        "how long an agent stays registered after its last receive or heartbeat",
    ),
    ScopeSpec(
        "agent.heartbeat",
        10.0,
        "how often a waiting receive or an open inbox renews its agent's presence; "
        "must be shorter than 'agent.presence'",
    ),
    ScopeSpec(
        "agent.handover",
        10.0,
        "taken messages waiting for their response to begin before they are handed back",
    ),
    ScopeSpec(
        "operation.cancel",
        5.0,
        "waiting for a cancelled operation to stop, on whichever process runs it",
    ),
)

# Fewer observations than this and the p99 is mostly noise.
_MIN_SAMPLES_TO_SUGGEST = 50
# Above this share of expirations the budget itself is suspect.
_EXPIRED_SHARE_LIMIT = 0.01
_SMALLEST_SUGGESTION_S = 0.01


class UnknownDeadlineScope(KeyError):
    """A scope name that is not in the table: a programming error, not a runtime fault."""


def _round_up(seconds: float, digits: int = 2) -> float:
    """Round up to ``digits`` significant digits: 0.01234 → 0.013, 3.01 → 3.1."""
    if seconds <= 0:
        return 0.0
    exponent = math.floor(math.log10(seconds)) - digits + 1
    step = 10.0**exponent
    return round(math.ceil(seconds / step - 1e-9) * step, max(0, -exponent))


def suggest_budget(budget_s: float, summary: LatencySummary) -> float:
    """The budget the observations so far argue for.

    The rule, in order:

    1. Fewer than 50 observations: keep the current budget (not enough evidence).
    2. Start from twice the observed p99: a budget should let the slowest
       1 % of healthy operations through with room to spare, and no more, so
       that a hang is noticed as early as a slow success allows.
    3. When more than 1 % of operations expired, the budget is cutting into
       the tail (or the dependency is failing, which the numbers cannot tell
       apart): suggest at least 1.5 times the current budget and let the operator
       decide which it is.
    4. Never below 10 ms; rounded up to two significant digits.
    """
    if summary.count < _MIN_SAMPLES_TO_SUGGEST:
        return budget_s
    suggestion = 2.0 * summary.p99_s
    if summary.expired / summary.count > _EXPIRED_SHARE_LIMIT:
        suggestion = max(suggestion, 1.5 * budget_s)
    return _round_up(max(suggestion, _SMALLEST_SUGGESTION_S))


class DeadlineScope:
    """A scope's live state: its budget and the latencies observed under it."""

    __slots__ = ("budget_s", "histogram", "spec")

    def __init__(self, spec: ScopeSpec, budget_s: float) -> None:
        self.spec = spec
        self.budget_s = budget_s
        self.histogram = LatencyHistogram()

    @property
    def name(self) -> str:
        return self.spec.name

    def stats(self) -> dict[str, float | int]:
        """The ``/api/deadlines`` entry for this scope."""
        summary = self.histogram.summary()
        return {
            "budget_s": self.budget_s,
            "count": summary.count,
            "expired": summary.expired,
            "p50_s": summary.p50_s,
            "p99_s": summary.p99_s,
            "max_s": summary.max_s,
            "suggested_s": suggest_budget(self.budget_s, summary),
        }


class DeadlineTable:
    """The budgets of every named scope, with the overrides applied.

    ``overrides`` maps scope names to seconds; a name that is not a scope or a
    budget that is not a positive finite number raises ``ValueError`` (the
    configuration loader reports it against the variable that set it).
    """

    def __init__(
        self, overrides: Mapping[str, float] | None = None, *, specs: tuple[ScopeSpec, ...] = SCOPES
    ) -> None:
        overrides = dict(overrides or {})
        known = {spec.name for spec in specs}
        for name, seconds in overrides.items():
            if name not in known:
                raise UnknownDeadlineScope(name)
            if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"deadline {name!r} must be a positive number of seconds")
        self._scopes = {
            spec.name: DeadlineScope(spec, float(overrides.get(spec.name, spec.default_s)))
            for spec in specs
        }

    def __getitem__(self, name: str) -> DeadlineScope:
        try:
            return self._scopes[name]
        except KeyError:
            raise UnknownDeadlineScope(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._scopes

    def __iter__(self) -> Iterator[DeadlineScope]:
        return iter(self._scopes.values())

    def budget(self, name: str) -> float:
        return self[name].budget_s

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """Every scope's ``stats()``, keyed by name: the body of ``/api/deadlines``."""
        return {name: scope.stats() for name, scope in self._scopes.items()}


# The table of a process that installed none for its current run; see install_deadlines.
_process_table = DeadlineTable()
_run_table: RunVar[DeadlineTable] = RunVar("autobot.deadlines")


def install_deadlines(table: DeadlineTable) -> DeadlineTable:
    """Make ``table`` the one :func:`deadline` reads; returns the previous table.

    Called inside a Trio run, it sets the table of that run only (a
    :class:`trio.lowlevel.RunVar`): the app's lifespan installs the table built
    from its settings there, so two apps in two runs of one process never see
    each other's budgets or statistics. Called outside a run, it sets the
    process's default, which every run that installed nothing reads (tests
    install a fresh default per test this way).
    """
    global _process_table
    previous = current_deadlines()
    try:
        _run_table.set(table)
    except RuntimeError:  # not inside a Trio run
        _process_table = table
    return previous


def current_deadlines() -> DeadlineTable:
    """The table :func:`deadline` reads from: this run's, else the process default."""
    try:
        return _run_table.get(_process_table)
    except RuntimeError:  # not inside a Trio run
        return _process_table


def deadline(name: str, budget_s: float | None = None) -> AbstractContextManager[trio.CancelScope]:
    """Run the block within the budget of scope ``name``.

    ``budget_s`` is for the few scopes whose budget is worked out per use (an
    operation's run from its timeout profile): it replaces the table's budget
    for this block, capped by it, and the block is still recorded, and reported
    when it expires, under ``name``.

    Raises :class:`DeadlineExceeded` if this scope's budget expires while the
    block is blocked at a checkpoint; ``UnknownDeadlineScope`` (before running
    the block) if ``name`` is not in the table. The block's duration is recorded
    whether it succeeds or raises, unless an enclosing scope cancelled it (its
    duration then says nothing about this scope). The yielded cancel scope can
    be used to cancel the block early; that is not counted as an expiry.

    It behaves as a :func:`phased_deadline` with a single phase, written as a
    class because it bounds every Redis command: a generator-based context
    manager costs several microseconds more per use.
    """
    scope = current_deadlines()[name]
    budget = scope.budget_s if budget_s is None else min(budget_s, scope.budget_s)
    return _Deadline(scope, budget)


class _Deadline:
    __slots__ = ("_budget_s", "_cancel_scope", "_scope", "_started")

    def __init__(self, scope: DeadlineScope, budget_s: float) -> None:
        self._scope = scope
        self._budget_s = budget_s

    def __enter__(self) -> trio.CancelScope:
        self._started = now = trio.current_time()
        self._cancel_scope = cancel_scope = trio.CancelScope(deadline=now + self._budget_s)
        return cancel_scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        cancel_scope = self._cancel_scope
        from_outside = False
        expired = False
        try:
            handled = cancel_scope.__exit__(exc_type, exc, traceback)
            from_outside = not handled and isinstance(exc, trio.Cancelled)
        except trio.Cancelled:
            from_outside = True
            raise
        finally:
            caught = cancel_scope.cancelled_caught
            expired = caught and trio.current_time() >= cancel_scope.deadline
            if expired:
                self._scope.histogram.record(self._budget_s, expired=True)
            elif not (from_outside or caught):
                self._scope.histogram.record(trio.current_time() - self._started)
        if expired:
            raise DeadlineExceeded(self._scope.spec.name, self._budget_s) from None
        return handled


class DeadlinePhase:
    """The phase a :func:`phased_deadline` block is in; :meth:`switch` moves it on.

    Handed out by :func:`phased_deadline`, never built directly.
    """

    __slots__ = ("_budget_s", "_cancel_scope", "_scope", "_started", "_table")

    def __init__(
        self,
        table: DeadlineTable,
        first: str,
        cancel_scope: trio.CancelScope,
        budget_s: float | None = None,
    ) -> None:
        self._table = table
        self._scope = table[first]
        self._budget_s = self._scope.budget_s
        if budget_s is not None:
            self._budget_s = min(budget_s, self._budget_s)
        self._started = trio.current_time()
        self._cancel_scope = cancel_scope
        cancel_scope.deadline = self._started + self._budget_s

    @property
    def name(self) -> str:
        """The scope name of the current phase."""
        return self._scope.name

    @property
    def budget_s(self) -> float:
        """The current phase's budget, counted from when the phase began."""
        return self._budget_s

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The block's cancel scope; cancelling it early is not counted as an expiry."""
        return self._cancel_scope

    def switch(self, name: str) -> None:
        """End the current phase and start ``name`` with its full budget from now.

        The phase that ends is recorded in its scope's histogram. Switching to
        the phase already current restarts its budget (and records the time
        spent in it). An unknown ``name`` raises ``UnknownDeadlineScope`` and
        leaves the current phase running. Not a checkpoint: safe to call from a
        synchronous callback inside the block.
        """
        scope = self._table[name]
        now = trio.current_time()
        self._scope.histogram.record(now - self._started)
        self._scope = scope
        self._budget_s = scope.budget_s
        self._started = now
        self._cancel_scope.deadline = now + scope.budget_s

    def extend(self) -> None:
        """Give the current phase its whole budget again, from now (a heartbeat).

        Unlike :meth:`switch`, the phase goes on: nothing is recorded until it ends.
        """
        self._cancel_scope.deadline = trio.current_time() + self._budget_s

    def rebudget(self, budget_s: float) -> float:
        """Give the current phase a new budget, counted from when it began.

        For a budget worked out from what the block learns as it runs (an
        operation that finds more items than estimated). Capped by the table's
        budget for the scope; returns the budget now in force.
        """
        self._budget_s = min(budget_s, self._scope.budget_s)
        self._cancel_scope.deadline = self._started + self._budget_s
        return self._budget_s

    def _record_end(self, *, expired: bool) -> None:
        if expired:
            self._scope.histogram.record(self._budget_s, expired=True)
        else:
            self._scope.histogram.record(trio.current_time() - self._started)


@contextmanager
def phased_deadline(first: str, budget_s: float | None = None) -> Iterator[DeadlinePhase]:
    """Run the block as a sequence of phases, each bounded by its own scope's budget.

    httpx's ``Timeout`` gives one request separate connect and read budgets;
    this is the same idea for a block whose phases are told apart by events
    the block observes, not by the call it is in. The LLM providers open one
    block per request::

        with phased_deadline("llm.connect") as phase:
            # the tracing hook calls phase.switch("llm.first_token")
            # as soon as the request starts going out on a connection
            response = await client.send(request, stream=True)
            ...

    The block starts in phase ``first``; :meth:`DeadlinePhase.switch` ends the
    current phase and gives the next one its full budget from that moment.
    When the current phase's budget runs out, :class:`DeadlineExceeded` names
    that phase and its budget. As with :func:`deadline`, an enclosing scope can
    only shorten the time left, an enclosing cancellation propagates as
    ``Cancelled`` with nothing recorded for the unfinished phase, and every phase
    that ends (by a switch, by the block finishing or by expiring) is recorded
    in its own scope's histogram, so each phase has its own p50/p99.
    """
    table = current_deadlines()
    cancel_scope = trio.CancelScope()
    phase = DeadlinePhase(table, first, cancel_scope, budget_s)
    cancelled_from_outside = False
    try:
        with cancel_scope:
            yield phase
    except trio.Cancelled:
        cancelled_from_outside = True
        raise
    finally:
        expired = cancel_scope.cancelled_caught and trio.current_time() >= cancel_scope.deadline
        if expired or not (cancelled_from_outside or cancel_scope.cancelled_caught):
            phase._record_end(expired=expired)
    if expired:
        raise DeadlineExceeded(phase.name, phase.budget_s)
