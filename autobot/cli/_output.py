"""What the client commands print: a ``rich`` console, and numbers people read.

On a terminal ``rich`` draws tables and live progress bars in colour; into a
pipe or a file it writes plain text of a fixed, generous width, so that a
script (or a test) reading the output gets whole ids and no escape codes.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

__all__ = ["console", "format_duration", "format_seconds", "print_error"]

# Wide enough for an operation id, its type and every column of `ops list`.
_PIPE_WIDTH = 160


def console(file: TextIO | None = None) -> Console:
    """A console on ``file`` (stdout): a terminal's own width, else plain text."""
    file = file or sys.stdout
    if file.isatty():
        return Console(file=file, highlight=False)
    return Console(file=file, highlight=False, width=_PIPE_WIDTH, no_color=True)


def print_error(message: str) -> None:
    """The one line a failed command leaves on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def format_seconds(seconds: float | None) -> str:
    """Seconds with three significant digits, in ms below one second: ``0.0123`` → ``12.3 ms``."""
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 1000 else f"{seconds:.0f} s"


def format_duration(seconds: float | None) -> str:
    """A time left as ``h:mm:ss`` (``-`` when unknown)."""
    if seconds is None or seconds < 0:
        return "-"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
