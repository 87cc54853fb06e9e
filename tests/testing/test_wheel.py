"""The plugin loads from an installed wheel in a fresh virtual environment.

Builds the wheel, installs it with its ``test`` extra into a new venv (from
the package index pip is configured with), and runs a small test file there
that uses the fixtures with no ``conftest.py``: what a user of AutoBot does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_TESTS = """
from autobot.testing import Scenario


async def test_the_fixtures_are_there(autobot_client, fake_llm):
    await fake_llm.set_scenario(Scenario(tokens=["from ", "the wheel"]))
    client = await autobot_client(llm=fake_llm)
    chat_id = await client.new_chat()
    events = await client.ask(chat_id, "hi")
    assert events[-1].data["message"]["content"] == "from the wheel"
"""


def run(argv: list[str], *, cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOBOT_", "PYTEST_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_plugin_loads_from_an_installed_wheel(tmp_path: Path) -> None:
    probe = run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
         "-d", str(tmp_path / "probe"), "pytest-trio"],
        cwd=tmp_path, timeout_s=120,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("the package index (PyPI) is unreachable: " + probe.stderr.strip()[-300:])

    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        cwd=tmp_path,
        timeout_s=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("autobot-*.whl")

    venv = tmp_path / "venv"
    assert (
        run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout_s=120).returncode == 0
    )
    python = venv / "bin" / "python"
    installed = run(
        [str(python), "-m", "pip", "install", "-q", f"{wheel}[test]"], cwd=tmp_path, timeout_s=600
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    (project / "test_user.py").write_text(USER_TESTS)
    result = run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, timeout_s=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout

    # The fixtures came from the wheel's plugin, not from this checkout.
    where = run(
        [str(python), "-c", "import autobot.testing._plugin as p; print(p.__file__)"],
        cwd=project,
        timeout_s=60,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout
