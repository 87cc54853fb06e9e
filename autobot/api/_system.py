"""Routes about the server itself: health, deadline statistics, metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint, Response, jsonify
from quart_schema import document_response
from quart_trio.wrappers import TrioResponse

from .._deadlines import current_deadlines
from .._metrics import CONTENT_TYPE
from ._context import services
from ._openapi import openapi_extra

__all__ = ["system"]

system = Blueprint("system", __name__)


class HealthCheckResult(BaseModel):
    """One dependency's check; checks add fields of their own (backend, breaker, ...)."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    latency_ms: float
    age_ms: float = Field(description="how old the result is: 0 for a fresh probe")
    error: str | SkipJsonSchema[None] = None


class Health(BaseModel):
    """``ok`` or ``degraded`` (200), ``down`` (503): the process cannot serve."""

    status: Literal["ok", "degraded", "down"]
    checks: dict[str, HealthCheckResult]


class ScopeStats(BaseModel):
    budget_s: float
    count: int
    expired: int
    p50_s: float
    p99_s: float
    max_s: float
    suggested_s: float


class Deadlines(BaseModel):
    scopes: dict[str, ScopeStats]


@system.get("/api/health")
@document_response(Health)
@document_response(Health, 503)
async def health() -> Response:
    """200 ok/degraded, 503 down; always within ``health``.

    Results are reused for up to a second and concurrent requests share one
    probe per check (see ``autobot/_health.py``): cheap enough for a load
    balancer to poll under load.
    """
    report = await services().report_health()
    response = jsonify(report.to_body())
    response.status_code = report.http_status
    return response


@system.get("/api/deadlines")
@document_response(Deadlines)
async def deadlines() -> Response:
    """Budget and observed latencies of every deadline scope, with a suggested budget."""
    return jsonify({"scopes": current_deadlines().snapshot()})


@system.get("/api/metrics")
@openapi_extra(
    {
        "responses": {
            "200": {
                "description": "the Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    }
)
async def metrics() -> Response:
    """Prometheus metrics: requests, latencies, deadline expirations, LLM tokens, Redis."""
    return TrioResponse(services().metrics.render(), content_type=CONTENT_TYPE)
