"""Chats and streamed answers: the workflow between the API, the store and the LLM."""

from ._detached import DetachedAnswers
from ._grounding import Context, FactSearch, Grounding, find_context
from ._service import (
    MAX_CONTENT_CHARS,
    Answer,
    ChatDeleted,
    ChatService,
    Joined,
    chat_channel,
    control_channel,
    validate_content,
    validate_detach,
    validate_knowledge,
    validate_model,
)

__all__ = [
    "MAX_CONTENT_CHARS",
    "Answer",
    "ChatDeleted",
    "ChatService",
    "Context",
    "DetachedAnswers",
    "FactSearch",
    "Grounding",
    "Joined",
    "chat_channel",
    "control_channel",
    "find_context",
    "validate_content",
    "validate_detach",
    "validate_knowledge",
    "validate_model",
]
