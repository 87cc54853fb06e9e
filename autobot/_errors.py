"""The exception hierarchy: one family per kind of failure, one API code each.

Every error AutoBot raises on purpose derives from :class:`AutoBotError`, which
carries the HTTP status and the snake_case ``code`` of the API contract's error
shape ``{"error": {"code", "message", ...}}``. Lower layers (the Redis client,
the LLM providers, storage) raise these without knowing about HTTP; the API
layer turns any of them into a response with :meth:`AutoBotError.to_body`.

Catch at the level you can handle::

    AutoBotError
    ├── BadRequest (400)            invalid_json, path_outside_root, ...
    ├── Unauthorized (401)
    ├── Forbidden (403)             origin_not_allowed, host_not_allowed
    ├── NotFound (404)              chat_not_found, file_not_found, ...
    ├── RequestTimeout (408)        request_timeout: the client was too slow sending
    ├── Conflict (409)              answer_in_progress, ...
    ├── PayloadTooLarge (413)       upload_too_large
    ├── UnsupportedMediaType (415)  unsupported_media_type
    ├── RangeNotSatisfiable (416)   range_not_satisfiable
    ├── ValidationFailed (422)
    ├── UpstreamError (502)         llm_error
    ├── ServiceUnavailable (503)    redis_unavailable, llm_unavailable, storage_unavailable
    └── DeadlineExceeded (504)      deadline_exceeded, llm_timeout

    LLMFailure is the family of everything the LLM side raises: LLMUnavailable
    (503), LLMError (502) and LLMTimeout (504); catch it to handle any of them.
    RedisTimeout is both a RedisUnavailable (503) and a DeadlineExceeded.
"""

from __future__ import annotations

from typing import Any, ClassVar

import trio

__all__ = [
    "AutoBotError",
    "BadRequest",
    "Conflict",
    "DeadlineExceeded",
    "Forbidden",
    "LLMError",
    "LLMFailure",
    "LLMTimeout",
    "LLMUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RedisTimeout",
    "RedisUnavailable",
    "RequestTimeout",
    "ServiceUnavailable",
    "StorageUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "ValidationFailed",
    "echo",
]

# Longest client value an error message repeats back, in characters.
ECHO_LIMIT = 64


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters.

    Messages name what the client sent ("no chat with id 'x1'") so that it can
    tell which value was wrong, but an 8 KB id must not come back whole: it
    would bloat every error and every log line that carries it.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


class AutoBotError(Exception):
    """Base of every deliberate AutoBot error.

    Subclasses set ``status`` and a default ``code``; an instance may narrow the
    code (``NotFound("no such chat", code="chat_not_found")``) and add detail
    fields that the API copies into the error object.
    """

    status: ClassVar[int] = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The contract's error shape for this error."""
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class BadRequest(AutoBotError):
    """The request itself is malformed (bad JSON, a path outside the root, ...)."""

    status = 400
    code = "bad_request"


class Unauthorized(AutoBotError):
    """A bearer token was required and was missing or wrong."""

    status = 401
    code = "unauthorized"


class Forbidden(AutoBotError):
    """The request is refused whoever sends it: a cross-site origin, an unknown host."""

    status = 403
    code = "forbidden"


class NotFound(AutoBotError):
    """The named resource does not exist."""

    status = 404
    code = "not_found"


class RequestTimeout(AutoBotError):
    """The client did not send its request body within ``http.body``.

    Not a :class:`DeadlineExceeded`: the server was waiting on the client, so
    the answer is 408, but it names the scope and budget the same way.
    """

    status = 408
    code = "request_timeout"

    def __init__(self, scope: str, deadline_s: float) -> None:
        super().__init__(
            f"the request body did not arrive within {scope!r} ({deadline_s:g} s)",
            scope=scope,
            deadline_s=deadline_s,
        )
        self.scope = scope
        self.deadline_s = deadline_s


class Conflict(AutoBotError):
    """The resource is in a state that forbids the request."""

    status = 409
    code = "conflict"


class PayloadTooLarge(AutoBotError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(AutoBotError):
    """A ``Range`` header names no byte range of the file (the answer says its size)."""

    status = 416
    code = "range_not_satisfiable"


class UnsupportedMediaType(AutoBotError):
    """The body is not in a media type the route reads (JSON routes need ``application/json``)."""

    status = 415
    code = "unsupported_media_type"


class ValidationFailed(AutoBotError):
    """The request parsed, but a field has a value the API does not accept."""

    status = 422
    code = "validation_error"


class UpstreamError(AutoBotError):
    """A dependency answered, but with an error or with data we cannot use."""

    status = 502
    code = "upstream_error"


class ServiceUnavailable(AutoBotError):
    """A dependency that can come back by itself is unavailable right now."""

    status = 503
    code = "service_unavailable"


class DeadlineExceeded(AutoBotError, trio.TooSlowError):
    """A named deadline scope expired.

    Raised by :func:`autobot.deadline` in place of the ``Cancelled`` its scope
    caught. ``scope`` and ``deadline_s`` say which budget ran out, so an operator
    reading the error knows which ``AUTOBOT_DEADLINE_*`` to look at. It is also a
    :class:`trio.TooSlowError`, so code written against ``trio.fail_after``
    catches it too.
    """

    status = 504
    code = "deadline_exceeded"

    def __init__(self, scope: str, deadline_s: float, *, code: str | None = None) -> None:
        super().__init__(
            f"deadline {scope!r} expired after {deadline_s:g} s",
            code=code,
            scope=scope,
            deadline_s=deadline_s,
        )
        self.scope = scope
        self.deadline_s = deadline_s


class RedisUnavailable(ServiceUnavailable):
    """Redis cannot be reached, or its circuit breaker is open."""

    code = "redis_unavailable"


class LLMFailure(AutoBotError):
    """Anything the LLM side raises: the provider is down, answered badly, or too slowly.

    Defines no status of its own: each member keeps its family's
    (:class:`LLMUnavailable` 503, :class:`LLMError` 502, :class:`LLMTimeout` 504).
    """


class LLMUnavailable(LLMFailure, ServiceUnavailable):
    """The LLM provider cannot be reached, or its circuit breaker is open."""

    code = "llm_unavailable"


class LLMError(LLMFailure, UpstreamError):
    """The LLM provider answered with an error, or with a malformed or truncated stream."""

    code = "llm_error"


class LLMTimeout(LLMFailure, DeadlineExceeded):
    """An ``llm.*`` deadline expired: connect, first token, idle gap or total."""

    code = "llm_timeout"


class StorageUnavailable(ServiceUnavailable):
    """The embedded store cannot write to its data directory right now."""

    code = "storage_unavailable"


class RedisTimeout(RedisUnavailable, DeadlineExceeded):
    """Redis did not answer within a ``redis.*`` deadline.

    To a client this is Redis being unavailable (503 ``redis_unavailable``),
    with the scope and budget that ran out; to code that catches deadlines it
    is a :class:`DeadlineExceeded` like any other.
    """

    def __init__(self, scope: str, deadline_s: float) -> None:
        DeadlineExceeded.__init__(self, scope, deadline_s)
        self.message = f"Redis did not answer within {scope!r} ({deadline_s:g} s)"
        self.args = (self.message,)
