"""Query parameters parsed strictly: a number is plain digits, nothing else.

Python's ``int()`` (and so a lax validator) accepts ``"1_0"``, ``" 5"`` and
``"+5"``; a client that sends those has a bug, and guessing what it meant
hides it. :data:`QueryInt` accepts only ASCII digits, at most 18 of them, so a
value far out of range (an offset near 2^63) is a 422 from the field's bounds
and never an overflow further down.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["QueryBool", "QueryInt"]

_PLAIN_DIGITS = re.compile(r"[0-9]{1,18}")


def _plain_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # a default, not client input
    if not isinstance(value, str) or not _PLAIN_DIGITS.fullmatch(value):
        raise ValueError("must be a whole number written as plain digits (at most 18)")
    return int(value)


QueryInt = Annotated[int, BeforeValidator(_plain_int)]


def _plain_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # a default, not client input
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


#: A query flag: exactly ``true`` or ``false``; ``1``, ``yes``, ``True`` are 422.
QueryBool = Annotated[bool, BeforeValidator(_plain_bool)]
