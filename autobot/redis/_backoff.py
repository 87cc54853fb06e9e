"""Exponential backoff with jitter, for reconnect loops.

Pure except for :meth:`Backoff.sleep`, so the delays can be checked with
``MockClock``. The jitter ("equal jitter": half fixed, half random) keeps
many subscribers from reconnecting in lock-step after a Redis restart.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import trio

__all__ = ["Backoff"]

# First retry soon (a dropped connection to a live server comes back at once),
# then doubling up to a cap short enough that a recovered Redis is noticed
# within a couple of seconds.
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 2.0


class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``, each jittered."""

    def __init__(
        self,
        first_s: float = _FIRST_DELAY_S,
        max_s: float = _MAX_DELAY_S,
        *,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError("need 0 < first_s <= max_s")
        self.first_s = first_s
        self.max_s = max_s
        self._random = random_fraction
        self.attempts = 0

    def next_delay(self) -> float:
        """The next delay: in [d/2, d] with d = first_s × 2^attempts, capped at max_s."""
        ceiling = min(self.max_s, self.first_s * 2**self.attempts)
        self.attempts += 1
        return ceiling / 2 + self._random() * ceiling / 2

    def reset(self) -> None:
        """Start again from ``first_s`` (after a success)."""
        self.attempts = 0

    async def sleep(self) -> None:
        """Sleep for :meth:`next_delay` (a checkpoint; cancellable)."""
        await trio.sleep(self.next_delay())
