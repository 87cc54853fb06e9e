"""The fake LLM server, for the suite: :mod:`autobot.testing`'s, plus a command line.

The server is ``autobot.testing.FakeLLM`` (the ``fake_llm`` fixture comes from
the kit's pytest plugin). Also runnable on its own, for multi-process tests and
benchmarks; it prints its base URL (add ``/v1`` for the OpenAI routes) and
serves until killed::

    python -m tests.support.fake_llm --port 0 --tokens 200 --delay 0 [--events]

With ``--events`` it also prints one JSON line per streamed answer as it ends
(``{"event": "client_closed" | "finished", "monotonic": ..., "tokens_sent": ...}``),
``monotonic`` being ``time.monotonic()``, which other processes on the host share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import trio

from autobot.testing import (
    FakeLLM,
    Scenario,
    SeenRequest,
    StreamRecord,
    fake_embedding,
    serve_fake_llm,
)

__all__ = [
    "FakeLLM",
    "Scenario",
    "SeenRequest",
    "StreamRecord",
    "fake_embedding",
    "serve_fake_llm",
]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_llm",
        description="Serve a fake Ollama/OpenAI LLM on loopback; prints its base URL.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--embed-dimension", type=int, default=256)
    parser.add_argument(
        "--events", action="store_true", help="print a JSON line as each stream ends"
    )
    args = parser.parse_args(argv)
    scenario = Scenario(
        tokens=args.tokens,
        token_delay=args.delay,
        first_token_delay=args.first_token_delay,
        embed_dimension=args.embed_dimension,
    )

    def report(record: StreamRecord, how: str) -> None:
        event = {"event": how, "monotonic": time.monotonic(), "tokens_sent": record.tokens_sent}
        print(json.dumps(event), flush=True)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            fake = await nursery.start(
                lambda task_status: serve_fake_llm(
                    scenario,
                    host=args.host,
                    port=args.port,
                    keep_records=False,
                    on_stream_end=report if args.events else None,
                    task_status=task_status,
                )
            )
            print(fake.ollama_url, flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
