"""Every error answers in the contract's JSON shape, over the wire."""

from __future__ import annotations

import dataclasses

import trio
from pydantic import BaseModel
from quart_schema import validate_request

from autobot import Conflict, Settings
from autobot.api import AutoBotApp, create_app
from tests.support.serving import served


class Greeting(BaseModel):
    name: str
    times: int = 1


def app_with_test_routes(settings: Settings) -> AutoBotApp:
    app = create_app(settings)

    @app.post("/api/test/greet")
    @validate_request(Greeting)
    async def greet(data: Greeting) -> dict[str, str]:
        return {"greeting": " ".join([f"hello {data.name}"] * data.times)}

    @app.get("/api/test/crash")
    async def crash() -> None:
        raise RuntimeError("secret internal detail")

    @app.get("/api/test/conflict")
    async def conflict() -> None:
        raise Conflict("already streaming", code="answer_in_progress")

    @app.get("/api/test/slow")
    async def slow() -> None:
        await trio.sleep_forever()

    return app


def assert_error_shape(body: dict, code: str) -> dict:
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_unknown_route_is_json_404(settings: Settings) -> None:
    async with served(create_app(settings)) as client:
        response = await client.get("/api/no/such/thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert_error_shape(response.json(), "not_found")


async def test_wrong_method_is_json_405_with_allow(settings: Settings) -> None:
    async with served(create_app(settings)) as client:
        response = await client.delete("/api/health")
    assert response.status_code == 405
    assert_error_shape(response.json(), "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_invalid_json_is_400_invalid_json(settings: Settings) -> None:
    async with served(app_with_test_routes(settings)) as client:
        response = await client.post(
            "/api/test/greet", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert_error_shape(response.json(), "invalid_json")


async def test_json_needs_a_json_content_type(settings: Settings) -> None:
    # A cross-site page can send text/plain or a form without a preflight, never JSON.
    async with served(app_with_test_routes(settings)) as client:
        for headers in (
            {},
            {"content-type": "text/plain"},
            {"content-type": "application/x-www-form-urlencoded"},
        ):
            response = await client.post(
                "/api/test/greet", content=b'{"name": "ada"}', headers=headers
            )
            assert response.status_code == 415
            assert_error_shape(response.json(), "unsupported_media_type")
        typed = await client.post(
            "/api/test/greet",
            content=b'{"name": "ada"}',
            headers={"content-type": "application/json; charset=utf-8"},
        )
    assert typed.status_code == 200
    assert typed.json() == {"greeting": "hello ada"}


async def test_validation_failure_is_422_naming_the_field(settings: Settings) -> None:
    async with served(app_with_test_routes(settings)) as client:
        response = await client.post("/api/test/greet", json={"name": "ada", "times": "many"})
    assert response.status_code == 422
    error = assert_error_shape(response.json(), "validation_error")
    assert error["fields"][0]["field"] == "times"
    assert "times" in error["message"]


async def test_unexpected_exception_is_500_without_details(settings: Settings) -> None:
    async with served(app_with_test_routes(settings)) as client:
        response = await client.get("/api/test/crash")
    assert response.status_code == 500
    error = assert_error_shape(response.json(), "internal_error")
    assert "secret" not in response.text
    assert "Traceback" not in error["message"]


async def test_autobot_error_keeps_its_status_and_code(settings: Settings) -> None:
    async with served(app_with_test_routes(settings)) as client:
        response = await client.get("/api/test/conflict")
    assert response.status_code == 409
    assert_error_shape(response.json(), "answer_in_progress")


async def test_handler_past_http_request_deadline_is_504_naming_the_scope(
    settings: Settings,
) -> None:
    settings = dataclasses.replace(settings, deadlines={"http.request": 0.2})
    async with served(app_with_test_routes(settings)) as client:
        started = trio.current_time()
        response = await client.get("/api/test/slow")
        elapsed = trio.current_time() - started
    assert response.status_code == 504
    error = assert_error_shape(response.json(), "deadline_exceeded")
    assert error["scope"] == "http.request"
    assert error["deadline_s"] == 0.2
    assert elapsed < 5


async def test_oversized_body_is_413(settings: Settings) -> None:
    settings = dataclasses.replace(settings, max_upload_bytes=100)
    async with served(app_with_test_routes(settings)) as client:
        response = await client.post("/api/test/greet", json={"name": "x" * 500})
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")
