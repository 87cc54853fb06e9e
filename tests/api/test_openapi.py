"""The OpenAPI document describes every route, and the live server keeps to it.

The fast tests read the document the app builds and compare it with the app's
own routing table. The slow one serves the real app (embedded store, the fake
LLM) and lets schemathesis generate requests for every operation from the
document, checking that no answer is a 5xx and that every answer has a
documented status, content type and schema.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from autobot import Settings
from autobot.api import create_app
from autobot.api._openapi import ERROR_SCHEMA_REF
from tests.support.fake_llm import Scenario, serve_fake_llm
from tests.support.serving import served

from .conftest import closed_port

# The document and its page are not described by themselves.
_SELF = {"/api/openapi.json", "/api/docs", "/api/docs/<name>"}
_IGNORED_METHODS = {"HEAD", "OPTIONS"}
_BEARER = {"Authorization": "Bearer secret"}


def _settings(tmp_path: Path, **fields: Any) -> Settings:
    fields.setdefault("llm_url", f"http://127.0.0.1:{closed_port()}")
    return Settings(data_dir=tmp_path / "data", **fields)


def _document(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    app = create_app(_settings(tmp_path))
    return app, app.extensions["QUART_SCHEMA"].openapi_provider.schema()


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:]*:)?([^>]+)>", r"{\1}", rule)


def test_every_api_route_is_described_with_a_response_schema(tmp_path: Path) -> None:
    app, document = _document(tmp_path)
    assert document["openapi"].startswith("3.1")
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule in _SELF or rule.websocket:
            continue
        for method in sorted(set(rule.methods or ()) - _IGNORED_METHODS):
            operation = document["paths"].get(_openapi_path(rule.rule), {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {rule.rule}")
                continue
            responses = operation["responses"]
            assert any(status < "400" for status in responses), (method, rule.rule)
            assert any(
                "schema" in media
                for response in responses.values()
                for media in response.get("content", {}).values()
            ), (method, rule.rule)
    assert missing == []


def test_every_error_status_refers_to_the_one_error_schema(tmp_path: Path) -> None:
    _, document = _document(tmp_path)
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}
    assert {"scope", "deadline_s", "fields"} <= set(detail["properties"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status < "400" or (path, status) == ("/api/health", "503"):
                    continue
                assert response["content"] == {
                    "application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}
                }, (method, path, status)


def test_streams_files_and_websockets_are_described(tmp_path: Path) -> None:
    app, document = _document(tmp_path)
    paths = document["paths"]
    answer = paths["/api/chats/{chat_id}/messages"]["post"]["responses"]["200"]["content"]
    assert set(answer) == {"application/json", "text/event-stream"}
    events = answer["text/event-stream"]["schema"]["oneOf"]
    assert {event["properties"]["event"]["const"] for event in events} == {"token", "done", "error"}
    download = paths["/api/files/content"]["get"]["responses"]
    assert {"200", "206", "304", "416"} <= set(download)
    upload = paths["/api/files/content"]["put"]["requestBody"]["content"]
    assert list(upload) == ["application/octet-stream"]
    assert list(paths["/api/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert paths["/api/health"]["get"]["security"] == []
    sockets = {_openapi_path(rule.rule) for rule in app.url_map.iter_rules() if rule.websocket}
    assert set(document["x-websockets"]) == sockets
    for entry in document["x-websockets"].values():
        assert entry["server_messages"]
        for ref in [*entry["client_messages"].values(), *entry["server_messages"].values()]:
            assert (
                ref["$ref"].removeprefix("#/components/schemas/")
                in document["components"]["schemas"]
            )
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_the_docs_page_is_served_from_the_package_alone(tmp_path: Path) -> None:
    async with served(create_app(_settings(tmp_path))) as client:
        page = await client.get("/api/docs")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        html = page.text
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # no inline script
        references = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(references) == 4
        for reference in references:
            assert reference.startswith("/api/docs/"), reference
            asset = await client.get(reference)
            assert asset.status_code == 200, reference
            if not reference.startswith("/api/docs/swagger-ui"):  # ours, not the vendored files
                assert "http://" not in asset.text and "https://" not in asset.text
        script = (await client.get("/api/docs/docs.js")).text
        assert '"/api/openapi.json"' in script and "validatorUrl: null" in script
        assert (await client.get("/api/docs/LICENSE.txt")).status_code == 200
        assert (await client.get("/api/docs/nothing.js")).status_code == 404
        document = await client.get("/api/openapi.json")
        assert document.status_code == 200
        assert document.json()["info"]["title"] == "AutoBot"


async def test_with_a_token_every_operation_answers_its_documented_401(tmp_path: Path) -> None:
    async with served(create_app(_settings(tmp_path, api_token="secret"))) as client:
        document = (await client.get("/api/openapi.json", headers=_BEARER)).json()
        for path, operations in document["paths"].items():
            url = re.sub(r"\{[^}]+\}", "x", path)
            for method, operation in operations.items():
                response = await client.request(method.upper(), url)
                if path == "/api/health":
                    assert response.status_code == 200
                    continue
                assert response.status_code == 401, (method, path)
                assert "401" in operation["responses"], (method, path)
                assert response.json()["error"]["code"] == "unauthorized"
        assert (await client.get("/api/docs")).status_code == 401
        assert (await client.get("/api/docs", headers=_BEARER)).status_code == 200


@contextmanager
def _server_in_a_thread(tmp_path: Path) -> Iterator[str]:
    """The real app served in a Trio run of its own thread, for a synchronous browser test."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with served(create_app(_settings(tmp_path))) as client:
            box["url"] = str(client.base_url).rstrip("/")
            box["token"] = trio.lowlevel.current_trio_token()
            box["stop"] = trio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(15), "the server did not start"
    try:
        yield box["url"]
    finally:
        trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
        thread.join(15)


@pytest.mark.slow
@pytest.mark.browser
def test_the_docs_page_renders_every_operation_with_nothing_from_other_hosts(
    tmp_path: Path,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (python3 dev.py test installs it)")
    _, document = _document(tmp_path)
    operations = sum(len(methods) for methods in document["paths"].values())
    with _server_in_a_thread(tmp_path) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page()
            problems: list[str] = []
            elsewhere: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))

            def only_this_server(route: Any) -> None:
                if route.request.url.startswith(url + "/"):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", only_this_server)
            page.goto(url + "/api/docs")
            page.wait_for_selector(".opblock", timeout=15_000)
            assert page.locator(".opblock").count() == operations
            assert "AutoBot" in page.locator(".info .title").inner_text()
            page.locator(".opblock-summary", has_text="/api/chats/{chat_id}/messages").click()
            page.wait_for_selector('option[value="text/event-stream"]', state="attached")
        finally:
            browser.close()
    assert elsewhere == []
    assert problems == []


# -- schemathesis against the live server ------------------------------------------------------

# Examples per operation (positive, then negative data) and the whole run's budget.
_EXAMPLES = {"positive": 12, "negative": 6}
_BUDGET_S = 40.0
_WAIT_CAP = "0.05"  # an agent receive may wait a minute; here it waits briefly
_SEED_MESSAGE = {"type": "event", "sender": "seeder", "payload": {"n": 1}}


def _seeds(base_url: str) -> dict[str, str]:
    """A chat, a fact, an operation and an agent that exist, for half the cases to name."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        chat = client.post("/api/chats", json={"title": "seed"}).json()["chat"]
        fact = client.post("/api/knowledge/facts", json={"text": "seed fact"}).json()
        started = client.post("/api/operations/security/scan", json={"path": ""}).json()
        client.post("/api/agents/seed-agent/messages", json=_SEED_MESSAGE)
    return {
        "chat_id": chat["id"],
        "fact_id": fact["id"],
        "operation_id": started["operation_id"],
        "agent": "seed-agent",
    }


def _fuzz(
    operation: Any,
    mode: str,
    base_url: str,
    path_ids: dict[str, str],
    checks: list[Any],
    failures: dict[str, str],
) -> None:
    """``_EXAMPLES[mode]`` cases of ``operation``; each distinct failure kept with its report."""
    import hypothesis
    import schemathesis
    from schemathesis.core.failures import FailureGroup

    @hypothesis.settings(
        max_examples=_EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(
        case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)),
        use_seed=hypothesis.strategies.booleans(),
    )
    def run(case: Any, use_seed: bool) -> None:
        if use_seed and path_ids:  # half the cases name a resource that exists
            case.path_parameters = {**(case.path_parameters or {}), **path_ids}
        if isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = _WAIT_CAP
        try:
            case.call_and_validate(base_url=base_url, checks=checks, timeout=20)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = f"{operation.label} ({mode}): {str(failure).splitlines()[0]}"
                failures.setdefault(key, f"{key}\n{group}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        pass  # no negative data exists for an operation that takes no input


def _run_schemathesis(document: dict[str, Any], base_url: str) -> list[str]:
    """Every operation, bounded and derandomized: the distinct failures found.

    Each operation gets resources of its own to name (a DELETE before it
    cannot leave it only 404s).
    """
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: dict[str, str] = {}
    started = time.monotonic()
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        operation = result.ok()
        seeds = _seeds(base_url)
        path_ids = {name: seeds[name] for name in seeds if f"{{{name}}}" in operation.path}
        for mode in _EXAMPLES:
            if time.monotonic() - started > _BUDGET_S:
                failures["budget"] = f"past the budget of {_BUDGET_S} s at {operation.label}"
                return list(failures.values())
            _fuzz(operation, mode, base_url, path_ids, checks, failures)
    return list(failures.values())


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_server_errors_and_no_undocumented_answers(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(serve_fake_llm, Scenario(tokens=["Hel", "lo"]))
        settings = _settings(tmp_path, llm_url=fake.ollama_url)
        async with served(create_app(settings)) as client:
            await client.put("/api/files/content?path=seed.txt", content=b"seed")
            document = (await client.get("/api/openapi.json")).json()
            begun = time.monotonic()
            failures = await trio.to_thread.run_sync(
                _run_schemathesis, document, str(client.base_url).rstrip("/")
            )
            print(f"schemathesis ran for {time.monotonic() - begun:.1f} s")
        nursery.cancel_scope.cancel()
    assert failures == [], "\n".join(failures)
