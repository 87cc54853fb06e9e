"""The layers import only downward: the ground floor loads no transport library."""

from __future__ import annotations

import subprocess
import sys


def test_import_autobot_loads_neither_httpx_nor_redis() -> None:
    # Settings, errors and deadlines are the ground floor: a tool that only reads
    # the configuration must not pay for (or depend on) the LLM and Redis clients.
    probe = (
        "import sys, autobot; autobot.load_settings({}); "
        "print(sorted(m for m in ('httpx', 'redis', 'autobot.llm', 'autobot.redis') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
