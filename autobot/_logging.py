"""Structured logging: one JSON object per line on stderr.

Log calls pass their fields in ``extra={"fields": {...}}``; the formatter puts
them beside the time, level, logger and message, so a request line reads::

    {"ts": "2026-11-27T20:31:02.114Z", "level": "info", "logger": "autobot.access",
     "msg": "request", "method": "GET", "path": "/api/health", "status": 200,
     "duration_ms": 1.8}
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JSONFormatter", "configure_logging", "log_fields"]


def log_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call carrying structured ``fields``."""
    return {"fields": fields}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """Send every logger's records to stderr as JSON lines, at ``level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
