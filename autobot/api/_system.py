"""Routes about the server itself: health, deadline statistics, metrics."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify
from quart_trio.wrappers import TrioResponse

from .._deadlines import current_deadlines
from .._metrics import CONTENT_TYPE
from ._context import services

__all__ = ["system"]

system = Blueprint("system", __name__)


@system.get("/api/health")
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
async def deadlines() -> Response:
    """Budget and observed latencies of every deadline scope, with a suggested budget."""
    return jsonify({"scopes": current_deadlines().snapshot()})


@system.get("/api/metrics")
async def metrics() -> Response:
    return TrioResponse(services().metrics.render(), content_type=CONTENT_TYPE)
