"""The real entry point on the wire: serve, answer, stop cleanly on a signal."""

from __future__ import annotations

import json
import pathlib
import signal

import httpx
import pytest
import trio
import trio_websocket

from tests.api.conftest import closed_port
from tests.support.fake_llm import FakeLLM, Scenario
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

            # The client keeps its connection open (keep-alive): shutdown must not wait
            # for it to time out.
            started = trio.current_time()
            server.process.send_signal(signum)
            with trio.fail_after(5):
                await server.process.wait()
            assert trio.current_time() - started < 1.5
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


async def test_sigterm_ends_streams_and_websockets_at_once_keeping_partials(
    tmp_path: pathlib.Path, fake_llm: FakeLLM
) -> None:
    await fake_llm.set_scenario(Scenario(tokens=100_000, token_delay=0.01))
    environ = {"AUTOBOT_DATA_DIR": str(tmp_path / "data"), "AUTOBOT_LLM_URL": fake_llm.ollama_url}
    async with run_server(environ) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            sse_chat = (await client.post("/api/chats", json={})).json()["chat"]["id"]
            ws_chat = (await client.post("/api/chats", json={})).json()["chat"]["id"]
            streaming = trio.Event()
            stream_ended = trio.Event()

            async def read_stream() -> None:
                async with client.stream(
                    "POST", f"/api/chats/{sse_chat}/messages", json={"content": "a", "stream": True}
                ) as response:
                    try:
                        async for chunk in response.aiter_text():
                            if "event: token" in chunk:
                                streaming.set()
                    except httpx.RemoteProtocolError:
                        pass  # cut off mid-stream, as the server went away
                stream_ended.set()

            url = server.url.replace("http://", "ws://") + f"/api/chats/{ws_chat}/ws"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_stream)
                async with trio_websocket.open_websocket_url(url) as ws:
                    await ws.send_message(json.dumps({"type": "message", "content": "b"}))
                    with trio.fail_after(10):
                        await ws.get_message()
                        await streaming.wait()

                    started = trio.current_time()
                    server.process.send_signal(signal.SIGTERM)
                    with trio.fail_after(5):
                        await server.process.wait()
                        await stream_ended.wait()
                    took = trio.current_time() - started
                    with pytest.raises(trio_websocket.ConnectionClosed):
                        while True:
                            await ws.get_message()
        await server.drain()
    assert server.process.returncode == 0
    # Streams are cancelled at once, not after the server.shutdown grace period.
    assert took < 2.0
    assert not [entry for entry in server.log if entry["level"] == "error"]

    async with run_server(environ) as restarted:
        async with httpx.AsyncClient(base_url=restarted.url) as client:
            for chat_id in (sse_chat, ws_chat):
                messages = (await client.get(f"/api/chats/{chat_id}")).json()["messages"]
                assert [m["role"] for m in messages] == ["user", "assistant"]
                assert messages[1]["status"] == "cancelled"
                assert messages[1]["content"].startswith("t0 ")
        restarted.process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            await restarted.process.wait()
