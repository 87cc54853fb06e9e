"""The command line's client side and ``check``: what ``python -m autobot`` runs besides
``serve``, ``export`` and ``import``.

Each command group is a module: ``check`` probes the configured dependencies
directly; ``chat``, ``ops`` and ``timeouts`` talk to a running server over
HTTP and WebSockets (:class:`ServerClient`). A failure a user can meet is a
:class:`ClientError`: one line on stderr and its ``exit_status``, no traceback.
See ``docs/cli.md``.
"""

from ._chat import run_chat
from ._check import Verdict, check_dependencies, run_check
from ._client import EXIT_FAILURE, EXIT_USAGE, ClientError, ServerClient, run_async
from ._ops import (
    FINISHED,
    WATCH_EXIT,
    parse_param,
    run_cancel,
    run_list,
    run_resume,
    run_start,
    run_watch,
)
from ._output import print_error
from ._timeouts import MARKER, fetch_deadlines, run_timeouts, suggested_budgets, write_toml

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "FINISHED",
    "MARKER",
    "WATCH_EXIT",
    "ClientError",
    "ServerClient",
    "Verdict",
    "check_dependencies",
    "fetch_deadlines",
    "parse_param",
    "print_error",
    "run_async",
    "run_cancel",
    "run_chat",
    "run_check",
    "run_list",
    "run_resume",
    "run_start",
    "run_timeouts",
    "run_watch",
    "suggested_budgets",
    "write_toml",
]
