"""The LLM's entry in ``/api/health``."""

from __future__ import annotations

from typing import Any

from ._interface import LLM

__all__ = ["LLMHealthCheck"]


class LLMHealthCheck:
    """Lists the provider's models; reports which provider answered and its breaker state.

    Not critical: an LLM that is down leaves AutoBot ``degraded`` (chats and
    files still work, and the provider comes back by itself). The listing goes
    through the circuit breaker like any call: while the circuit is open the
    check fails at once, and when it is half-open the check can be the probe
    that closes it again.
    """

    name = "llm"
    critical = False

    def __init__(self, llm: LLM) -> None:
        self._llm = llm

    async def check(self) -> dict[str, Any]:
        return await self._llm.health()
