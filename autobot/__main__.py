"""Command line: ``python -m autobot COMMAND`` (``serve`` is what ``run.py`` calls).

Server side: ``serve``, ``export``, ``import``, and ``check``, which probes
the configured dependencies itself. Client side: ``chat``, ``ops``,
``timeouts``, which talk to the server named by ``--url`` (default
http://127.0.0.1:8000) with ``--token`` (default ``AUTOBOT_API_TOKEN``);
both may come before or after the command. ``docs/cli.md`` describes each.

A configuration error is one line on stderr and exit status 2, never a
traceback; so is a client command's failure (exit 1, or 2 for a bad ``--url``
or a refused token), and Ctrl-C outside the chat ends a client command with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._config import ConfigError, Settings, load_settings
from ._deadlines import install_deadlines
from ._errors import AutoBotError
from ._logging import configure_logging

EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
DEFAULT_URL = "http://127.0.0.1:8000"
PRIORITIES = ("high", "normal", "low")
STATUSES = ("queued", "running", "completed", "failed", "cancelled", "timed_out")


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from ._server import run
    from ._serving_claim import Refused, claim_embedded_store

    print(f"AutoBot {__version__}", file=sys.stderr)
    for line in settings.summary():
        print(f"  {line}", file=sys.stderr)
    if settings.redis_url is None:
        try:
            claim_embedded_store(settings)  # its lock is held until the process ends
        except Refused as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
    run(settings)
    return 0


def _export(settings: Settings, _args: argparse.Namespace) -> int:
    from ._migrate import run_export

    return run_export(settings)


def _import(settings: Settings, _args: argparse.Namespace) -> int:
    from ._migrate import run_import

    return run_import(settings)


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    from .cli import run_check

    return run_check(settings)


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from .cli import run_chat

    return run_chat(args.url, args.token, args.chat_id)


def _ops(settings: Settings, args: argparse.Namespace) -> int:
    from . import cli

    if args.ops_command == "start":
        return cli.run_start(
            args.url, args.token, args.type, args.path, args.param or [], args.priority
        )
    if args.ops_command == "list":
        return cli.run_list(args.url, args.token, args.status, args.type)
    action = {"watch": cli.run_watch, "cancel": cli.run_cancel, "resume": cli.run_resume}
    return action[args.ops_command](args.url, args.token, args.operation_id)


def _timeouts(settings: Settings, args: argparse.Namespace) -> int:
    from .cli import run_timeouts

    return run_timeouts(args.url, args.token, args.write, force=args.force)


def _param(text: str) -> tuple[str, Any]:
    from .cli import parse_param

    try:
        return parse_param(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_server_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Repeated on each client command with SUPPRESS, so `autobot chat --url ...`
    # works as well as `autobot --url ... chat` without one overriding the other.
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--url",
        default=DEFAULT_URL if top else default,
        help=f"the server for client commands (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=None if top else default,
        help="the API token (default: AUTOBOT_API_TOKEN)",
    )


def _add_ops(commands: Any, client: argparse.ArgumentParser) -> None:
    ops = commands.add_parser("ops", help="long-running operations", parents=[client])
    actions = ops.add_subparsers(dest="ops_command", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start an operation; prints its id", parents=[client])
    start.add_argument("type", metavar="TYPE", help="an operation type, e.g. codebase_indexing")
    start.add_argument(
        "path", metavar="PATH", nargs="?", help="relative to the files root (<data>/files)"
    )
    start.add_argument(
        "--param",
        action="append",
        type=_param,
        metavar="KEY=VALUE",
        help='another parameter (VALUE as JSON when it parses: 5, true, ["*.py"]); repeatable',
    )
    start.add_argument("--priority", choices=PRIORITIES)
    listing = actions.add_parser("list", help="a table of the operations", parents=[client])
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--type", metavar="TYPE")
    for name, text in (
        ("watch", "a live progress bar until it ends; the exit status says how it ended"),
        ("cancel", "cancel a queued or running operation"),
        ("resume", "resume a cancelled, failed or timed-out one from its checkpoint"),
    ):
        action = actions.add_parser(name, help=text, parents=[client])
        action.add_argument("operation_id", metavar="ID")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autobot",
        description="AI assistant backend on Trio. Configured by AUTOBOT_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_server_options(parser, top=True)
    client = argparse.ArgumentParser(add_help=False)
    _add_server_options(client, top=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="serve the HTTP and WebSocket API (the default)")
    commands.add_parser("export", help="write all stored data to stdout as JSON lines")
    commands.add_parser("import", help="store JSON lines from stdin (as written by export)")
    commands.add_parser(
        "check", help="print the configuration and probe storage, Redis and the LLM"
    )
    chat = commands.add_parser("chat", help="a terminal chat with a server", parents=[client])
    chat.add_argument("chat_id", metavar="CHAT_ID", nargs="?", help="a chat to go on with")
    _add_ops(commands, client)
    timeouts = commands.add_parser(
        "timeouts", help="observed deadline latencies and suggested budgets", parents=[client]
    )
    timeouts.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="write the suggestions as TOML for AUTOBOT_CONFIG",
    )
    timeouts.add_argument(
        "--force", action="store_true", help="replace FILE even if --write did not make it"
    )
    return parser


_Command = Callable[[Settings, argparse.Namespace], int]
_SERVER: dict[str | None, _Command] = {
    None: _serve,
    "serve": _serve,
    "export": _export,
    "import": _import,
}
_CLIENT: dict[str, _Command] = {
    "check": _check,
    "chat": _chat,
    "ops": _ops,
    "timeouts": _timeouts,
}


def _run_client(command: _Command, settings: Settings, args: argparse.Namespace) -> int:
    from .cli import ClientError, print_error

    # Client-side waits use this configuration's budgets too (AUTOBOT_DEADLINE_*).
    install_deadlines(settings.deadline_table())
    if getattr(args, "token", None) is None:
        args.token = settings.api_token
    try:
        return command(settings, args)
    except ClientError as error:
        print_error(error.message)
        return error.exit_status
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command in _CLIENT:
        # A terminal command prints its own lines; the log says only what goes wrong.
        configure_logging("debug" if settings.log_level == "debug" else "warning")
    else:
        configure_logging(settings.log_level)
    try:
        if args.command in _CLIENT:
            return _run_client(_CLIENT[args.command], settings, args)
        return _SERVER[args.command](settings, args)
    except AutoBotError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
