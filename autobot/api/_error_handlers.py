"""Every error answers in the contract's JSON shape, never an HTML page.

Three sources of errors meet here: our own :class:`AutoBotError` family (status
and code on the exception), Werkzeug's ``HTTPException`` (routing: 404, 405;
body limits: 413), and quart-schema's validation errors (422). Anything else is
a bug: it is logged with its traceback and answers 500 ``internal_error``
without leaking details.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from .._errors import AutoBotError

__all__ = ["error_response", "register_error_handlers"]

log = logging.getLogger("autobot.api")


def error_response(status: int, code: str, message: str, **details: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **details}})
    response.status_code = status
    return response


def _snake_case(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _validation_fields(error: RequestSchemaValidationError) -> list[dict[str, str]]:
    errors = getattr(error.validation_error, "errors", None)
    if not callable(errors):
        return []
    return [
        {
            "field": ".".join(str(part) for part in item.get("loc", ())) or "(body)",
            "message": item.get("msg", "invalid"),
        }
        for item in errors()
    ]


async def _on_autobot_error(error: AutoBotError) -> Response:
    response = error_response(error.status, error.code, error.message, **error.details)
    # An error may name headers of its answer (401's WWW-Authenticate, a close).
    response.headers.update(getattr(error, "headers", {}))
    return response


async def _on_validation_error(error: RequestSchemaValidationError) -> Response:
    fields = _validation_fields(error)
    message = "; ".join(f"{item['field']}: {item['message']}" for item in fields)
    return error_response(
        422, "validation_error", message or "the request failed validation", fields=fields
    )


async def _on_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = {413: "payload_too_large"}.get(status, _snake_case(error.name))
    message = {
        404: "no such route",
        405: "method not allowed on this route",
    }.get(status, error.description or error.name)
    response = error_response(status, code, message)
    if status == 405 and error.get_response().headers.get("Allow"):
        response.headers["Allow"] = error.get_response().headers["Allow"]
    return response


async def _on_unexpected(error: Exception) -> Response:
    log.error("unhandled error", exc_info=error)
    return error_response(500, "internal_error", "the server hit an unexpected error")


def register_error_handlers(app: Quart) -> None:
    app.register_error_handler(AutoBotError, _on_autobot_error)
    app.register_error_handler(RequestSchemaValidationError, _on_validation_error)
    app.register_error_handler(HTTPException, _on_http_exception)
    app.register_error_handler(Exception, _on_unexpected)
