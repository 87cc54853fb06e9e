"""docs/testing.md's examples, run as written: the tutorial cannot drift from the kit."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(DOC.read_text()) if lang == kind]


def tutorial_tests() -> list[str]:
    """The test functions the tutorial's ``python`` blocks define, in order."""
    module = ast.parse("\n\n".join(blocks("python")))
    return [
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    ]


def test_the_tutorial_has_its_examples() -> None:
    names = " ".join(tutorial_tests())
    for topic in ("stalled", "cancel", "crash", "broadcast", "virtual_time"):
        assert topic in names, topic


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    """The ``python`` blocks, in order, are one test file; the ``ini`` block its pytest.ini.

    It runs in a pytest of its own in an empty directory, as a reader's
    project would: the fixtures come from the installed plugin, not from
    this suite's conftest.py.
    """
    (tmp_path / "pytest.ini").write_text("\n".join(blocks("ini")))
    (tmp_path / "test_my_bot.py").write_text("\n\n".join(blocks("python")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOBOT_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for name in tutorial_tests():
        assert f"PASSED test_my_bot.py::{name}" in result.stdout, result.stdout[-3000:]
