"""Short deadline budgets for one block of a test."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from .._deadlines import DeadlineTable, current_deadlines, install_deadlines

__all__ = ["override_deadlines"]


@contextmanager
def override_deadlines(budgets: Mapping[str, float]) -> Iterator[DeadlineTable]:
    """Run the block with some scopes' budgets replaced; the previous table is back after.

    ::

        with override_deadlines({"llm.idle": 0.05}):
            with pytest.raises(LLMTimeout):
                async with provider.stream(messages) as tokens: ...

    The other scopes keep the budgets they had (the defaults, or an enclosing
    override); the statistics start empty. An unknown scope name raises
    ``UnknownDeadlineScope`` and a budget that is not a positive number
    ``ValueError``, before the block runs.

    Inside a Trio run it changes that run's table only, which is the one an
    app served in the test's run reads too: a deadline entered in the block
    gets the short budget, one already running keeps its own. An app installs
    its settings' table when it starts serving, so for budgets an app starts
    with, pass ``deadlines=`` to ``autobot_app``/``autobot_client`` instead.
    Budgets are read from ``trio.current_time()``, so they work the same
    under ``trio.testing.MockClock``, where they cost no real time at all.
    """
    previous = current_deadlines()
    merged = {scope.name: scope.budget_s for scope in previous} | dict(budgets)
    table = DeadlineTable(merged)
    install_deadlines(table)
    try:
        yield table
    finally:
        install_deadlines(previous)
