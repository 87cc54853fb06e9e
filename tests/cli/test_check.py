"""``autobot check``: the configuration, a verdict line per dependency, the exit status."""

from __future__ import annotations

import pathlib
import re

import pytest

from tests.support.fake_llm import FakeLLM
from tests.support.redis_server import RedisProcess

from .helpers import assert_one_error_line, cli, closed_port, server_for

VERDICT = re.compile(r"^(\w+) +(ok|FAILED) +([\d.]+) ms  (.*)$")


def verdicts(stdout: str) -> dict[str, tuple[str, float, str]]:
    found = {}
    for line in stdout.splitlines():
        match = VERDICT.match(line)
        if match:
            name, verdict, latency, detail = match.groups()
            found[name] = (verdict, float(latency), detail)
    return found


async def test_a_good_configuration_passes(tmp_path: pathlib.Path, fake_llm: FakeLLM) -> None:
    env = {"AUTOBOT_DATA_DIR": str(tmp_path / "data"), "AUTOBOT_LLM_URL": fake_llm.ollama_url}
    result = await cli("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.lines[0] == "AutoBot 0.1.0 configuration"
    assert f"  llm         ollama {fake_llm.ollama_url} model=llama3.2" in result.lines
    assert "  storage     embedded" in result.lines
    found = verdicts(result.stdout)
    assert list(found) == ["storage", "llm"]  # no Redis line without Redis
    assert found["storage"][0] == "ok" and "embedded store" in found["storage"][2]
    assert found["llm"][0] == "ok" and "lists 2 models" in found["llm"][2]
    assert all(latency > 0 for _, latency, _ in found.values())
    assert result.stderr == ""


async def test_an_llm_on_a_closed_port_fails(tmp_path: pathlib.Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = await cli("check", env={"AUTOBOT_DATA_DIR": str(tmp_path), "AUTOBOT_LLM_URL": url})
    assert result.returncode == 1
    found = verdicts(result.stdout)
    assert found["storage"][0] == "ok"
    verdict, _, detail = found["llm"]
    assert verdict == "FAILED"
    assert url in detail
    assert re.search(r"^llm +FAILED ", result.stdout, re.M)


@pytest.mark.slow
async def test_redis_has_its_own_line(
    tmp_path: pathlib.Path, fake_llm: FakeLLM, shared_redis: RedisProcess
) -> None:
    env = {"AUTOBOT_DATA_DIR": str(tmp_path), "AUTOBOT_LLM_URL": fake_llm.ollama_url}
    up = await cli("check", env=env | {"AUTOBOT_REDIS_URL": shared_redis.url})
    down = await cli(
        "check", env=env | {"AUTOBOT_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert list(verdicts(up.stdout)) == ["storage", "redis", "llm"]
    assert verdicts(up.stdout)["redis"][0] == "ok"
    assert "the store is on Redis" in verdicts(up.stdout)["storage"][2]
    assert down.returncode == 1
    assert verdicts(down.stdout)["redis"][0] == "FAILED"
    assert verdicts(down.stdout)["llm"][0] == "ok"


@pytest.mark.slow
async def test_a_store_held_by_a_running_server_is_ok(
    tmp_path: pathlib.Path, fake_llm: FakeLLM
) -> None:
    data = tmp_path / "data"
    async with server_for(data, fake_llm):
        result = await cli(
            "check", env={"AUTOBOT_DATA_DIR": str(data), "AUTOBOT_LLM_URL": fake_llm.ollama_url}
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "held by a running server" in verdicts(result.stdout)["storage"][2]


async def test_a_bad_setting_is_one_line_and_status_2() -> None:
    result = await cli("check", env={"AUTOBOT_PORT": "abc"})
    assert_one_error_line(result, 2, "AUTOBOT_PORT")
    assert result.stdout == ""
