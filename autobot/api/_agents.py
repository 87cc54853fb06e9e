"""Agent message bus routes (being written)."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["agents"]

agents = Blueprint("agents", __name__)
