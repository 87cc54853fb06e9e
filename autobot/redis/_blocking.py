"""Server-side timeouts of blocking commands, derived from the caller's deadline.

``BLPOP``, ``BZPOPMIN``, ``XREAD BLOCK`` and their kin carry a timeout that the
*server* enforces. A caller in AutoBot does not pass one: it runs the command
under a deadline scope, and the timeout sent to Redis is taken from the time
left, minus the client's ``block_margin_s`` so that Redis's empty reply
arrives before the caller's deadline fires (a reply cut off by the deadline
would cost the connection). An explicit timeout shorter than that is kept. With no deadline
at all, the command's own timeout is sent as given (``0``: wait forever), and
the command stays cancellable: cancelling it closes its connection, which
also frees the server-side wait.

Pure functions, tested without a server.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["is_blocking", "with_server_timeout"]

# Where each command keeps its timeout, and in which unit.
_LAST_SECONDS = frozenset(("BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX"))
_FIRST_SECONDS = frozenset(("BLMPOP", "BZMPOP"))
_LAST_MILLISECONDS = frozenset(("WAIT", "WAITAOF"))
_BLOCK_OPTION = frozenset(("XREAD", "XREADGROUP"))
_SHORTEST_S = 0.001


def _name(args: tuple[Any, ...]) -> str:
    name = args[0]
    if isinstance(name, bytes | bytearray | memoryview):
        name = bytes(name).decode("ascii", "replace")
    return str(name).upper()


def _word(arg: Any) -> str:
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg).decode("ascii", "replace").upper()
    return str(arg).upper()


def _block_index(args: tuple[Any, ...]) -> int | None:
    for index in range(1, len(args) - 1):
        word = _word(args[index])
        if word == "STREAMS":
            return None
        if word == "BLOCK":
            return index + 1
    return None


def is_blocking(args: tuple[Any, ...]) -> bool:
    """Whether the command makes the server wait (``XREAD`` only with ``BLOCK``)."""
    name = _name(args)
    if name in _LAST_SECONDS or name in _FIRST_SECONDS or name in _LAST_MILLISECONDS:
        return True
    return name in _BLOCK_OPTION and _block_index(args) is not None


def derive_timeout(requested_s: float, remaining_s: float, margin_s: float) -> float:
    """The timeout to send: ``requested_s`` (0 = forever) capped by the time left.

    The margin is subtracted from the time left; when the time left is less
    than twice the margin, half of it is used instead, so a short deadline
    still leaves the server some time to wait. Never below 1 ms, since 0 would
    mean "forever" to Redis.
    """
    if math.isinf(remaining_s):
        return requested_s
    budget = remaining_s - margin_s if remaining_s > 2 * margin_s else remaining_s / 2
    budget = max(budget, _SHORTEST_S)
    if requested_s <= 0 or requested_s > budget:
        return budget
    return requested_s


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") or "0"


def with_server_timeout(
    args: tuple[Any, ...], remaining_s: float, margin_s: float
) -> tuple[tuple[Any, ...], float]:
    """``args`` with the timeout rewritten; also returns that timeout in seconds (0: none).

    ``remaining_s`` is the time to the caller's effective deadline (``inf``
    when there is none).
    """
    name = _name(args)
    if name in _LAST_SECONDS or name in _LAST_MILLISECONDS:
        index = len(args) - 1
    elif name in _FIRST_SECONDS:
        index = 1
    elif name in _BLOCK_OPTION:
        found = _block_index(args)
        if found is None:
            return args, 0.0
        index = found
    else:
        return args, 0.0
    in_ms = name in _LAST_MILLISECONDS or name in _BLOCK_OPTION
    requested = float(args[index]) / (1000 if in_ms else 1)
    timeout = derive_timeout(requested, remaining_s, margin_s)
    if in_ms:
        value: Any = max(1, int(timeout * 1000)) if timeout > 0 else 0
    else:
        value = _seconds_text(timeout) if timeout > 0 else 0
    return (*args[:index], value, *args[index + 1 :]), timeout
