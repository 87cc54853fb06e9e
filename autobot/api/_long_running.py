"""Marking the handlers that ``http.request`` does not bound.

A non-streamed answer runs inside its handler for as long as the LLM takes,
which the ``llm.*`` deadlines bound (``llm.total``: 600 s by default). The
general budget for ordinary handlers (``http.request``: 30 s) would cut such
answers short, so those handlers are marked and run without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["is_long_running", "long_running"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_autobot_long_running"


def long_running(handler: F) -> F:
    """Run ``handler`` without the ``http.request`` deadline (its own deadlines bound it)."""
    setattr(handler, _MARK, True)
    return handler


def is_long_running(handler: Callable[..., Any] | None) -> bool:
    return bool(getattr(handler, _MARK, False))
