"""The real entry point on the wire: serve, answer, stop cleanly on a signal."""

from __future__ import annotations

import pathlib
import signal

import httpx
import pytest
import trio

from tests.api.conftest import closed_port
from tests.support.process import run_server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serves_health_then_exits_cleanly_on_signal(
    tmp_path: pathlib.Path, signum: signal.Signals
) -> None:
    environ = {
        "AUTOBOT_DATA_DIR": str(tmp_path / "data"),
        "AUTOBOT_LLM_URL": f"http://127.0.0.1:{closed_port()}",
    }
    async with run_server(environ) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/api/health")
        assert response.status_code == 200
        assert response.json()["checks"]["storage"]["ok"] is True

        server.process.send_signal(signum)
        with trio.fail_after(5):
            await server.process.wait()
        await server.drain()
    assert server.process.returncode == 0
    request_lines = [entry for entry in server.log if entry.get("msg") == "request"]
    assert request_lines == [
        {**request_lines[0], "method": "GET", "path": "/api/health", "status": 200}
    ]
    assert request_lines[0]["duration_ms"] > 0
    messages = [entry["msg"] for entry in server.log]
    assert messages.index("shutting down") < messages.index("stopped")
    assert not [entry for entry in server.log if entry["level"] == "error"]
