"""/api/deadlines and /api/metrics."""

from __future__ import annotations

from autobot import SCOPES, Settings
from autobot.api import create_app
from tests.support.serving import served


async def test_deadlines_lists_every_scope_with_observations(settings: Settings) -> None:
    async with served(create_app(settings)) as client:
        await client.get("/api/health")
        response = await client.get("/api/deadlines")
    assert response.status_code == 200
    scopes = response.json()["scopes"]
    assert set(scopes) == {spec.name for spec in SCOPES}
    health = scopes["health"]
    assert set(health) == {"budget_s", "count", "expired", "p50_s", "p99_s", "max_s", "suggested_s"}
    assert health["budget_s"] == 2.0
    assert health["count"] == 1
    assert 0 < health["p50_s"] <= health["max_s"] < 2.0
    # Too few observations to argue for a change.
    assert health["suggested_s"] == 2.0


async def test_metrics_are_prometheus_text(settings: Settings) -> None:
    async with served(create_app(settings)) as client:
        await client.get("/api/health")
        await client.get("/api/nope")
        response = await client.get("/api/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'autobot_http_requests_total{method="GET",route="/api/health",status="200"} 1.0' in text
    assert 'autobot_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    assert 'autobot_deadline_budget_seconds{scope="llm.idle"} 30.0' in text
    assert 'autobot_deadline_observations_total{scope="health"} 1.0' in text
    assert 'autobot_deadline_expired_total{scope="health"} 0.0' in text
