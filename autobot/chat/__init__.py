"""Chats and streamed answers: the workflow between the API, the store and the LLM."""

from ._service import (
    MAX_CONTENT_CHARS,
    Answer,
    ChatDeleted,
    ChatService,
    chat_channel,
    control_channel,
    validate_content,
    validate_model,
)

__all__ = [
    "MAX_CONTENT_CHARS",
    "Answer",
    "ChatDeleted",
    "ChatService",
    "chat_channel",
    "control_channel",
    "validate_content",
    "validate_model",
]
