"""The OpenAPI document at ``/api/openapi.json``, built from the routes' own models.

quart-schema reads the request, query and response models that the route
decorators attach (``validate_request``, ``validate_querystring``,
``document_response``); the models that check a request are the ones the
document shows, so the two cannot drift apart. This provider adds what
quart-schema has no decorator for:

* **errors**: every error answer refers to one schema, ``Error`` (the
  contract's ``{"error": {"code", "message", ...}}``). Each operation lists the
  statuses it can answer: those every route shares (400 framing or duplicate
  credentials, 403 host or origin, 401 without the token, 503/504 when a
  dependency or a deadline fails), those its inputs imply (a JSON body: 408,
  413, 415, 422; a query model: 422) and those its handler declares with
  :func:`errors`.
* **other media**: :func:`openapi_extra` merges a fragment into an operation
  (server-sent events, file bytes, a raw upload body, the metrics text, 204s).
* **WebSockets**, which OpenAPI has no paths for: :func:`websocket_messages`
  names the messages of a WebSocket route, listed under ``x-websockets``.
* bearer authentication, tags by blueprint, one operation id per path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema
from quart import Quart
from quart_schema import Info, OpenAPIProvider, QuartSchema
from werkzeug.routing import Rule

__all__ = [
    "ERROR_SCHEMA_REF",
    "ErrorBody",
    "ErrorDetail",
    "FieldError",
    "errors",
    "event_stream",
    "install_openapi",
    "openapi_extra",
    "websocket_messages",
]

F = TypeVar("F", bound=Callable[..., Any])

ERROR_SCHEMA_REF = "#/components/schemas/Error"
_REF_TEMPLATE = "#/components/schemas/{model}"

_ERRORS_MARK = "_autobot_openapi_errors"
_EXTRA_MARK = "_autobot_openapi_extra"
_WEBSOCKET_MARK = "_autobot_openapi_websocket"

#: What each error status means, as the document says it.
ERROR_STATUSES: dict[int, str] = {
    400: "malformed request: invalid_json, json_too_deep, duplicate_authorization,"
    " ambiguous_framing, path_outside_root, ...",
    401: "unauthorized: the bearer token is missing or wrong (AUTOBOT_API_TOKEN)",
    403: "host_not_allowed or origin_not_allowed",
    404: "the resource does not exist (chat_not_found, file_not_found, ...)",
    408: "request_timeout: the body did not arrive within http.body",
    409: "the resource is in a state that forbids the request",
    413: "payload_too_large / upload_too_large",
    415: "unsupported_media_type: send Content-Type: application/json",
    416: "range_not_satisfiable",
    422: "validation_error (with fields) or a more specific code",
    502: "llm_error: the LLM provider answered an error",
    503: "a dependency is unavailable (storage, Redis, the LLM)",
    504: "deadline_exceeded or llm_timeout (with scope and deadline_s)",
}

# Routes that are neither guarded by the token nor bounded by the services.
_OPEN_PATHS = frozenset({"/api/health"})


class FieldError(BaseModel):
    """One field of the request to blame for a 422."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """The error object: a snake_case code, a sentence, and details where they apply."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", examples=["chat_not_found"])
    message: str
    scope: str | SkipJsonSchema[None] = Field(
        default=None, description="the deadline scope that expired (408, 504)"
    )
    deadline_s: float | SkipJsonSchema[None] = Field(
        default=None, description="that scope's budget in seconds"
    )
    fields: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None, description="the fields to blame (422)"
    )


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


def errors(*statuses: int) -> Callable[[F], F]:
    """Declare error statuses a handler answers besides those every route shares."""
    unknown = set(statuses) - set(ERROR_STATUSES)
    if unknown:
        raise ValueError(f"no description for error statuses {sorted(unknown)}")

    def mark(handler: F) -> F:
        setattr(handler, _ERRORS_MARK, set(getattr(handler, _ERRORS_MARK, ())) | set(statuses))
        return handler

    return mark


def openapi_extra(fragment: Mapping[str, Any]) -> Callable[[F], F]:
    """Merge ``fragment`` into the handler's operation object (for what models cannot say).

    ``{"$model": SomeModel}`` anywhere in it becomes a reference to that model's schema.
    """

    def mark(handler: F) -> F:
        setattr(handler, _EXTRA_MARK, _deep_merge(getattr(handler, _EXTRA_MARK, {}), fragment))
        return handler

    return mark


def event_stream(events: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    """A ``text/event-stream`` media type object: ``schema`` describes one event.

    As OpenAPI 3.2 reads an event stream (and 3.1 tools such as schemathesis
    do): each event is ``{"event", "data", "id"?}``, ``data`` being JSON text
    whose ``contentSchema`` is the event's model.
    """
    return {
        "schema": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"const": name},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$model": model},
                        },
                        "id": {"type": "string"},
                    },
                }
                for name, model in events.items()
            ]
        }
    }


def websocket_messages(
    summary: str, *, client: Mapping[str, type[BaseModel]], server: Mapping[str, type[BaseModel]]
) -> Callable[[F], F]:
    """Describe a WebSocket route's messages (by ``type``) for ``x-websockets``."""

    def mark(handler: F) -> F:
        setattr(handler, _WEBSOCKET_MARK, (summary, dict(client), dict(server)))
        return handler

    return mark


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def model_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """The component schemas of ``models`` and of every model they use."""
    components: dict[str, Any] = {}
    for model in models:
        schema = TypeAdapter(model).json_schema(ref_template=_REF_TEMPLATE, mode="serialization")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


def _resolve_models(value: Any, found: set[type[BaseModel]]) -> Any:
    """``{"$model": M}`` → a ``$ref`` to M, collecting M in ``found``."""
    if isinstance(value, Mapping):
        model = value.get("$model")
        if isinstance(model, type) and issubclass(model, BaseModel):
            found.add(model)
            return {"$ref": _REF_TEMPLATE.format(model=model.__name__)}
        return {key: _resolve_models(item, found) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_models(item, found) for item in value]
    return value


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_STATUSES[status],
        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
    }


def _shared_statuses(path: str, operation: Mapping[str, Any]) -> set[int]:
    statuses = {400, 403}
    if path not in _OPEN_PATHS:
        statuses |= {401, 503, 504}
    body = operation.get("requestBody", {}).get("content", {})
    if "application/json" in body:
        statuses |= {408, 413, 415, 422}
    if any(parameter["in"] == "query" for parameter in operation.get("parameters", ())):
        statuses.add(422)
    if any(parameter["in"] == "path" for parameter in operation.get("parameters", ())):
        statuses.add(404)  # no such resource, or a value that names no route (a '/')
    return statuses


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


class AutoBotOpenAPIProvider(OpenAPIProvider):
    """quart-schema's document, with errors, media types, WebSockets and security."""

    def schema(self) -> dict[str, Any]:
        self._operation_ids: set[str] = set()
        self._extra_models: set[type[BaseModel]] = set()
        document = super().schema()
        document["paths"] = dict(document["paths"])
        components = document["components"]
        components["schemas"].update(model_schemas([ErrorBody]))
        components["schemas"]["Error"] = components["schemas"].pop("ErrorBody")
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "needed on every /api route but /api/health when"
                " AUTOBOT_API_TOKEN is set",
            }
        }
        document["security"] = [{}, {"bearer": []}]
        websockets = self._websockets()
        components["schemas"].update(model_schemas(self._extra_models))
        document["x-websockets"] = websockets
        document["info"]["description"] = _description(websockets)
        return document

    def generate_rules(self) -> Iterable[Rule]:
        """The API's routes only: the web page and its assets are not part of it."""
        return (rule for rule in super().generate_rules() if rule.rule.startswith("/api/"))

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else None
        declared = getattr(func, _ERRORS_MARK, set())
        extra = _resolve_models(getattr(func, _EXTRA_MARK, {}), self._extra_models)
        for path, operations in paths.items():
            for method, operation in operations.items():
                operation["responses"] = {
                    str(key): value for key, value in operation["responses"].items()
                }
                operation = _deep_merge(copy.deepcopy(operation), extra)
                if blueprint is not None:
                    operation.setdefault("tags", [blueprint])
                responses = operation["responses"]
                for status in sorted(_shared_statuses(path, operation) | declared):
                    responses.setdefault(str(status), _error_response(status))
                operation["responses"] = dict(sorted(responses.items()))
                if path in _OPEN_PATHS:
                    operation["security"] = []
                operations[method] = operation
        return paths, components

    def build_path_parameter(self, name: str, converter: Any) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if parameter["schema"] == {"type": "string"}:
            # One path segment: a '/' would name another route.
            parameter["schema"] = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
        return parameter

    def operation_id(self, method: str, path: str, func: Callable) -> str | None:
        wanted = super().operation_id(method, path, func) or f"{method.lower()}_{_slug(path)}"
        if wanted in self._operation_ids:  # the same handler on an alias path
            wanted = f"{method.lower()}_{_slug(path)}"
        self._operation_ids.add(wanted)
        return wanted

    def _websockets(self) -> dict[str, Any]:
        described: dict[str, Any] = {}
        for rule in self._app.url_map.iter_rules():
            if not rule.websocket:
                continue
            func = self._app.view_functions[rule.endpoint]
            summary, client, server = getattr(func, _WEBSOCKET_MARK, ("", {}, {}))
            self._extra_models |= set(client.values()) | set(server.values())
            path = re.sub(r"<(?:[^:]*:)?([^>]+)>", r"{\1}", rule.rule)
            described[path] = {
                "summary": summary,
                "parameters": [
                    self.build_path_parameter(name, converter)
                    for name, converter in rule._converters.items()
                ],
                "client_messages": {
                    kind: {"$ref": _REF_TEMPLATE.format(model=model.__name__)}
                    for kind, model in client.items()
                },
                "server_messages": {
                    kind: {"$ref": _REF_TEMPLATE.format(model=model.__name__)}
                    for kind, model in server.items()
                },
            }
        return described


def _description(websockets: Mapping[str, Any]) -> str:
    lines = [
        "The AutoBot API: chats with answers streamed from an LLM, the knowledge base,"
        " files, the agent message bus and long-running operations.",
        "",
        'Every error answers `{"error": {"code", "message", ...}}` (the `Error` schema).',
        "",
        "WebSocket routes (not OpenAPI paths; their messages are described under"
        " `x-websockets`, each a JSON object with a `type`):",
        "",
    ]
    for path, entry in websockets.items():
        client = ", ".join(f"`{kind}`" for kind in entry["client_messages"]) or "nothing"
        server = ", ".join(f"`{kind}`" for kind in entry["server_messages"])
        lines.append(
            f"- `{path}`: {entry['summary']} Client sends {client}; server sends {server}."
        )
    return "\n".join(lines)


def install_openapi(app: Quart, *, version: str) -> QuartSchema:
    """Publish the document at ``/api/openapi.json``; the docs page is :mod:`._docs_ui`'s."""
    return QuartSchema(
        app,
        openapi_path="/api/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(title="AutoBot", version=version),
        openapi_provider_class=AutoBotOpenAPIProvider,
    )
