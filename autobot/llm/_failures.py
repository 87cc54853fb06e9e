"""How the LLM layer names its failures, and which of them mean "the provider is out".

The families come from :mod:`autobot._errors`: :class:`LLMUnavailable` (503,
cannot connect or circuit open), :class:`LLMError` (502, the provider answered
with an error or a broken stream) and :class:`LLMTimeout` (504, an ``llm.*``
deadline expired). Once an answer has started streaming, its failures also
carry the text that had arrived (``partial``), so the caller can keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._errors import DeadlineExceeded, LLMError, LLMTimeout, LLMUnavailable

__all__ = ["LLMStreamError", "LLMStreamTimeout", "is_outage", "llm_timeouts"]


class LLMStreamError(LLMError):
    """An :class:`LLMError` raised by a streamed answer; ``partial`` is the text before it.

    Raised for an error object in the stream, a malformed line, a stream that
    ended (or whose connection dropped) before its terminator.
    """

    def __init__(self, message: str, *, partial: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.partial = partial


class LLMStreamTimeout(LLMTimeout):
    """An :class:`LLMTimeout` raised by a streamed answer; ``partial`` is the text before it."""

    def __init__(self, scope: str, deadline_s: float, *, partial: str) -> None:
        super().__init__(scope, deadline_s)
        self.partial = partial


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the provider is unreachable or not answering at all.

    True for :class:`LLMUnavailable` and for every expired ``llm.*`` phase
    except ``llm.total`` (an answer that is merely long comes from a provider
    that works). False for :class:`LLMError`: a provider that answers with an
    error is up. Outages count against the circuit breaker and make a
    fallback chain try its next provider; errors do neither.
    """
    if isinstance(error, LLMUnavailable):
        return True
    return isinstance(error, LLMTimeout) and error.scope != "llm.total"


@contextmanager
def llm_timeouts(partial: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Re-raise an expired ``llm.*`` :class:`DeadlineExceeded` as :class:`LLMTimeout`.

    With ``partial``, and when it returns text (a stream had begun), the error
    is an :class:`LLMStreamTimeout` carrying that text. Expiries of other
    scopes (an enclosing ``health.check``, say) pass through unchanged.
    """
    try:
        yield
    except LLMTimeout:
        raise
    except DeadlineExceeded as error:
        if not error.scope.startswith("llm."):
            raise
        text = partial() if partial is not None else None
        if text is None:
            raise LLMTimeout(error.scope, error.deadline_s) from None
        raise LLMStreamTimeout(error.scope, error.deadline_s, partial=text) from None
