"""``python -m autobot export`` / ``import``: all data as JSON lines, either backend.

The backend is the one the settings select (``AUTOBOT_REDIS_URL`` set or not),
so moving from the embedded store to Redis is::

    python -m autobot export > autobot.jsonl
    AUTOBOT_REDIS_URL=redis://host:6379/0 python -m autobot import < autobot.jsonl

Stop the server first when exporting the embedded store: it holds the data
directory's lock while it runs.
"""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO

import trio

from ._config import Settings
from ._errors import BadRequest
from .storage import open_store

__all__ = ["export_data", "import_data"]

_BATCH = 1000


async def export_data(settings: Settings, output: BinaryIO) -> int:
    """Write every record of the configured store to ``output``; returns the count."""
    out = trio.wrap_file(output)

    async def write(record: dict[str, Any]) -> None:
        await out.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")

    async with open_store(settings) as store:
        count = await store.export_records(write)
    await out.flush()
    return count


def _parse(line: bytes, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        raise BadRequest(f"line {number} is not JSON") from None
    if not isinstance(record, dict):
        raise BadRequest(f"line {number} is not a JSON object")
    return record


async def import_data(settings: Settings, source: BinaryIO) -> int:
    """Store every record read from ``source``, a batch at a time; returns the count."""
    lines = trio.wrap_file(source)
    count = 0
    batch: list[dict[str, Any]] = []
    async with open_store(settings) as store:
        number = 0
        async for line in lines:
            number += 1
            if line.strip():
                batch.append(_parse(line, number))
            if len(batch) >= _BATCH:
                count += await store.import_records(batch)
                batch = []
        count += await store.import_records(batch)
    return count


def run_export(settings: Settings) -> int:
    count = trio.run(export_data, settings, sys.stdout.buffer)
    print(f"exported {count} records", file=sys.stderr)
    return 0


def run_import(settings: Settings) -> int:
    count = trio.run(import_data, settings, sys.stdin.buffer)
    print(f"imported {count} records", file=sys.stderr)
    return 0
