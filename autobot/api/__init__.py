"""The HTTP and WebSocket API: a Quart-Trio app over the service layer."""

from ._app import AutoBotApp, create_app

__all__ = ["AutoBotApp", "create_app"]
