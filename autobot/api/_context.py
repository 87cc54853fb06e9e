"""How handlers reach the service container of the app serving them."""

from __future__ import annotations

from typing import cast

from quart import current_app

from .._services import Services

__all__ = ["services"]


def services() -> Services:
    """The running app's services (valid inside a request or WebSocket)."""
    return cast(Services, current_app.extensions["autobot.services"])
