"""The page's route and files: strict headers, no inline script, nothing that parses markup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autobot import Settings
from autobot.api import create_app
from tests.support.serving import served

from .conftest import closed_port

STATIC = Path(__file__).resolve().parents[2] / "autobot" / "static"


def _settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", llm_url=f"http://127.0.0.1:{closed_port()}", **fields
    )


async def test_the_page_is_served_with_a_strict_policy(tmp_path: Path) -> None:
    async with served(create_app(_settings(tmp_path))) as client:
        response = await client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert 'data-testid="chat-list"' in response.text

        script = await client.get("/assets/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.headers["cache-control"] == "no-cache"
        again = await client.get(
            "/assets/app.js", headers={"If-None-Match": script.headers["etag"]}
        )
        assert again.status_code == 304
        assert again.content == b""


@pytest.mark.parametrize(
    "path", ["/assets/nope.js", "/assets/../_page.py", "/assets/", "/assets/docs/index.html"]
)
async def test_only_the_page_files_are_served(tmp_path: Path, path: str) -> None:
    async with served(create_app(_settings(tmp_path))) as client:
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_the_page_needs_no_token_but_the_api_does(tmp_path: Path) -> None:
    async with served(create_app(_settings(tmp_path, api_token="secret"))) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/assets/app.js")).status_code == 200
        assert (await client.get("/api/chats")).status_code == 401


def test_the_html_loads_only_files_of_its_own_and_has_no_inline_script() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert re.findall(r"\son[a-z]+\s*=", html) == []
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references
    for reference in references:
        assert reference.startswith("/assets/"), reference
        assert (STATIC / reference.removeprefix("/assets/")).is_file(), reference


def test_the_scripts_never_hand_text_to_an_html_parser() -> None:
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"createContextualFragment|DOMParser|srcdoc"
    )
    scripts = sorted(STATIC.glob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert forbidden.findall(text) == [], script.name
        for imported in re.findall(r'from "\./([^"]+)"', text):
            assert (STATIC / imported).is_file(), f"{script.name} imports {imported}"
