"""POST /api/knowledge/crawl over the wire: 202, the crawl completes, its facts are searchable."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
import trio

from autobot import Settings
from autobot.api import create_app
from tests.support.polling import eventually
from tests.support.serving import served
from tests.support.site_server import Answer, Site, html_page, serve_site

SITE = {
    "/robots.txt": Answer(b"User-agent: *\nDisallow: /drafts\n", content_type="text/plain"),
    "/": html_page(
        "Lighthouses",
        "<article><h1>Lighthouses</h1><p>The lighthouse keeper trims the lamp wick every "
        "evening before sunset.</p></article><a href='/fog'>Fog</a><a href='/drafts/x'>x</a>",
    ),
    "/fog": html_page(
        "Fog",
        "<article><p>Foghorns sound every thirty seconds when visibility drops.</p></article>",
    ),
    "/drafts/x": html_page("Draft", "<p>An unfinished draft about lanterns.</p>"),
}


async def finished(client: httpx.AsyncClient, operation_id: str) -> dict[str, Any] | None:
    record = (await client.get(f"/api/operations/{operation_id}")).json()
    return record if record["status"] not in ("queued", "running") else None


@pytest.mark.slow
async def test_a_crawl_adds_searchable_facts(backend_settings: Settings) -> None:
    site = Site(SITE)
    settings = dataclasses.replace(backend_settings, crawl_allow_private=True)
    async with serve_site(site) as base, served(create_app(settings)) as client:
        response = await client.post("/api/knowledge/crawl", json={"url": f"{base}/"})
        assert response.status_code == 202, response.text
        operation_id = response.json()["operation_id"]
        with trio.fail_after(20):
            record = await eventually(lambda: finished(client, operation_id))
        assert record["type"] == "kb_population"
        assert record["status"] == "completed", record
        assert record["result"]["pages"] == 2 and record["result"]["disallowed"] == 1
        assert record["progress"]["processed_items"] == 2

        async def found() -> list[dict[str, Any]] | None:
            answer = await client.get("/api/knowledge/search", params={"q": "foghorn"})
            assert answer.status_code == 200, answer.text
            return answer.json()["results"] or None

        with trio.fail_after(5):
            hits = await eventually(found)
        assert hits[0]["metadata"]["source"] == f"{base}/fog"
        assert "thirty seconds" in hits[0]["text"]
        lamp = (await client.get("/api/knowledge/search", params={"q": "lamp wick"})).json()
        assert lamp["results"][0]["metadata"]["source"] == f"{base}/"
        drafts = (await client.get("/api/knowledge/search", params={"q": "draft lanterns"})).json()
        assert drafts["results"] == []
    assert "/drafts/x" not in site.hits


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8000/", "127.0.0.1"),
        ("http://localhost/", "localhost"),
        ("http://[::1]/", "::1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://192.168.0.1/", "192.168.0.1"),
        ("ftp://example.com/", "only http and https"),
    ],
)
async def test_private_and_other_urls_are_refused(settings: Settings, url: str, says: str) -> None:
    async with served(create_app(settings)) as client:
        response = await client.post("/api/knowledge/crawl", json={"url": url})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "url_not_allowed"
        assert says in error["message"]
        if not url.startswith("ftp"):
            assert "AUTOBOT_CRAWL_ALLOW_PRIVATE=1" in error["message"]
        assert error["fields"][0]["field"] == "url"
        listed = (await client.get("/api/operations")).json()["operations"]
        assert listed == []  # nothing was queued


@pytest.mark.parametrize(
    "body",
    [{}, {"url": 5}, {"url": "http://example.com/", "max_pages": 0}, {"url": "x", "extra": 1}],
)
async def test_bad_bodies_are_422(settings: Settings, body: dict[str, Any]) -> None:
    async with served(create_app(settings)) as client:
        response = await client.post("/api/knowledge/crawl", json=body)
        assert response.status_code == 422, response.text


async def test_a_crawl_through_the_operations_route_is_guarded_too(settings: Settings) -> None:
    async with served(create_app(settings)) as client:
        response = await client.post(
            "/api/operations",
            json={"type": "kb_population", "params": {"url": "http://127.0.0.1:8000/"}},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "url_not_allowed"
        assert (await client.get("/api/operations")).json()["operations"] == []
