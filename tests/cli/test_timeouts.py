"""``autobot timeouts``: the /api/deadlines table, and the TOML that AUTOBOT_CONFIG loads."""

from __future__ import annotations

import pathlib
import re
import tomllib

import httpx
import pytest

from autobot import SCOPES, load_settings
from autobot.cli import MARKER, ClientError, suggested_budgets, write_toml

from .helpers import assert_one_error_line, cli, server_for

DEFAULTS = {spec.name: spec.default_s for spec in SCOPES}
COLUMNS = ["scope", "budget", "count", "expired", "p50", "p99", "max", "suggested"]


def stats(budget_s: float, suggested_s: float, count: int = 100) -> dict:
    return {
        "budget_s": budget_s,
        "count": count,
        "expired": 0,
        "p50_s": suggested_s / 4,
        "p99_s": suggested_s / 2,
        "max_s": suggested_s / 2,
        "suggested_s": suggested_s,
    }


def test_only_suggestions_that_differ_from_the_defaults_are_written() -> None:
    scopes = {
        "http.request": stats(30.0, 0.05),
        "llm.idle": stats(60.0, 60.0),  # an override the observations keep
        "redis.command": stats(2.0, 2.0),  # the default: no line needed
        "from.a.newer.server": stats(1.0, 0.5),
    }
    assert suggested_budgets(scopes) == {"http.request": 0.05, "llm.idle": 60.0}


def test_an_ordering_the_loader_insists_on_is_kept_by_raising_the_longer() -> None:
    # health observed fast (cached answers), health.check not yet seen 50 times:
    # health may not drop below health.check.
    kept = suggested_budgets({"health": stats(2.0, 0.02), "health.check": stats(1.5, 1.5, 3)})
    assert "health" not in kept  # raised back to the default ratio: the default
    both = suggested_budgets({"health": stats(2.0, 0.02), "health.check": stats(1.5, 0.03)})
    assert both["health.check"] == 0.03
    assert both["health"] == 0.04 > both["health.check"]


def test_the_file_loads_and_applies(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "deadlines.toml"
    scopes = {
        "http.request": stats(30.0, 0.05),
        "health": stats(2.0, 0.02),
        "health.check": stats(1.5, 0.03),
    }
    written = write_toml(path, scopes, url="http://127.0.0.1:8000")
    text = path.read_text()
    assert text.startswith(MARKER + "\n")
    assert tomllib.loads(text)["deadlines"] == written
    settings = load_settings({"AUTOBOT_CONFIG": str(path)})
    assert dict(settings.deadlines) == written
    assert settings.deadline_table().budget("http.request") == 0.05
    assert "must stay longer than health.check" in text
    # A file this command made may be replaced; another one only with force.
    write_toml(path, scopes, url="http://127.0.0.1:8000")
    other = tmp_path / "autobot.toml"
    other.write_text("port = 9000\n")
    with pytest.raises(ClientError, match="--force"):
        write_toml(other, scopes, url="http://127.0.0.1:8000")
    assert other.read_text() == "port = 9000\n"
    write_toml(other, scopes, url="http://127.0.0.1:8000", force=True)
    assert load_settings({"AUTOBOT_CONFIG": str(other)}).deadlines == written


@pytest.mark.slow
async def test_table_and_write_round_trip(tmp_path: pathlib.Path) -> None:
    async with server_for(tmp_path / "data") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(60):  # enough observations of http.request for a suggestion
                await client.get("/api/chats")
            observed = (await client.get("/api/deadlines")).json()["scopes"]
        table = await cli("--url", server.url, "timeouts")
        target = tmp_path / "tuned.toml"
        written = await cli("--url", server.url, "timeouts", "--write", str(target))
        foreign = tmp_path / "mine.toml"
        foreign.write_text("port = 9000\n")
        refused = await cli("--url", server.url, "timeouts", "--write", str(foreign))

    assert table.returncode == 0, table.stderr
    header = next(line for line in table.lines if "scope" in line)
    assert re.findall(r"[a-z0-9]+", header) == COLUMNS
    rows = {line.split("│")[1].strip(): line for line in table.lines if line.startswith("│")}
    assert set(rows) == set(DEFAULTS)
    request_row = [cell.strip() for cell in rows["http.request"].split("│")[1:-1]]
    assert request_row[1] == "30 s"
    assert int(request_row[2]) >= 60
    assert request_row[7].endswith("↓")  # suggested far below the 30 s budget
    assert rows["kb.fetch"].split("│")[5].strip() == "-"  # never observed

    assert written.returncode == 0, written.stderr
    assert f"budgets to {target}" in written.lines[-1]
    budgets = tomllib.loads(target.read_text())["deadlines"]
    assert 0 < budgets["http.request"] < 30
    assert budgets["http.request"] >= observed["http.request"]["suggested_s"] * 0.99
    settings = load_settings({"AUTOBOT_CONFIG": str(target)})
    assert dict(settings.deadlines) == budgets
    table_of_budgets = settings.deadline_table()
    assert table_of_budgets.budget("health.check") < table_of_budgets.budget("health")

    assert_one_error_line(refused, 2, "--force")
    assert foreign.read_text() == "port = 9000\n"
