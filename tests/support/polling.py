"""Waiting for something another process or task will do: :mod:`autobot.testing`'s."""

from __future__ import annotations

from autobot.testing import eventually

__all__ = ["eventually"]
