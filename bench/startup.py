"""Start-up time: process spawn to the first 200 from /api/health.

Runs ``run.py`` (the embedded default, nothing else set up) several times and,
as the peer in the same run, a bare Hypercorn Trio worker serving a one-route
ASGI app, so the number reads as "what AutoBot adds to starting Hypercorn".

    .venv/bin/python bench/startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEER = """
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})

config = Config()
config.bind = ["127.0.0.1:%d"]
config.accesslog = None
trio.run(serve, app, config)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_200(port: int, give_up_at: float) -> None:
    while time.monotonic() < give_up_at:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.002)
        finally:
            connection.close()
    raise TimeoutError("no 200 within 20 s")


def time_start(command: list[str], port: int, env: dict[str, str]) -> float:
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        first_200(port, started + 20)
        return time.monotonic() - started
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"autobot run.py": [], "bare hypercorn (peer)": []}
    with tempfile.TemporaryDirectory() as data_dir:
        for _ in range(args.runs):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")}
            env |= {"AUTOBOT_PORT": str(port), "AUTOBOT_DATA_DIR": data_dir}
            results["autobot run.py"].append(time_start([sys.executable, "run.py"], port, env))
            port = free_port()
            results["bare hypercorn (peer)"].append(
                time_start([sys.executable, "-c", PEER % port], port, dict(os.environ))
            )
    print(f"start-up to first 200 from /api/health, {args.runs} runs each")
    print(f"{'server':<24}{'median ms':>10}{'max ms':>10}")
    for name, times in results.items():
        print(f"{name:<24}{statistics.median(times) * 1000:>10.0f}{max(times) * 1000:>10.0f}")
    ratio = statistics.median(results["autobot run.py"]) / statistics.median(
        results["bare hypercorn (peer)"]
    )
    print(f"ratio autobot / peer: {ratio:.2f}")


if __name__ == "__main__":
    main()
