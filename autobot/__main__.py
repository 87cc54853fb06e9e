"""Command line: ``python -m autobot serve`` (what ``run.py`` calls), ``export``, ``import``.

A configuration error is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from ._config import ConfigError, Settings, load_settings
from ._errors import AutoBotError
from ._logging import configure_logging

EXIT_CONFIG_ERROR = 2


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from ._server import run

    print(f"AutoBot {__version__}", file=sys.stderr)
    for line in settings.summary():
        print(f"  {line}", file=sys.stderr)
    run(settings)
    return 0


def _export(settings: Settings, _args: argparse.Namespace) -> int:
    from ._migrate import run_export

    return run_export(settings)


def _import(settings: Settings, _args: argparse.Namespace) -> int:
    from ._migrate import run_import

    return run_import(settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autobot",
        description="AI assistant backend on Trio. Configured by AUTOBOT_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="serve the HTTP and WebSocket API (the default)")
    commands.add_parser("export", help="write all stored data to stdout as JSON lines")
    commands.add_parser("import", help="store JSON lines from stdin (as written by export)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    configure_logging(settings.log_level)
    commands = {None: _serve, "serve": _serve, "export": _export, "import": _import}
    try:
        return commands[args.command](settings, args)
    except AutoBotError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
