"""Serving a real app over loopback with Hypercorn's Trio worker: :mod:`autobot.testing`'s."""

from __future__ import annotations

from autobot.testing import serve_app as served

__all__ = ["served"]
