"""A second ``run.py`` on one embedded data dir refuses to start, naming AUTOBOT_REDIS_URL."""

from __future__ import annotations

import os
import sys

import pytest
import trio

from tests.support.process import ROOT, run_server


@pytest.mark.slow
async def test_a_second_server_on_one_embedded_data_dir_refuses(tmp_path) -> None:
    environ = {"AUTOBOT_DATA_DIR": str(tmp_path / "data")}
    async with run_server(environ) as first:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")}
        env |= {"AUTOBOT_PORT": "0", **environ}
        with trio.fail_after(20):
            second = await trio.run_process(
                [sys.executable, str(ROOT / "run.py")],
                env=env,
                cwd=str(ROOT),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert second.returncode == 2
        errors = [line for line in second.stderr.decode().splitlines() if "error:" in line]
        assert len(errors) == 1, second.stderr.decode()
        assert "AUTOBOT_REDIS_URL" in errors[0]
        assert f"(pid {first.process.pid})" in errors[0]
        assert first.process.returncode is None  # the first one keeps serving
