"""Command line: ``python -m autobot serve`` (what ``run.py`` calls).

A configuration error is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from ._config import ConfigError, Settings, load_settings
from ._logging import configure_logging

EXIT_CONFIG_ERROR = 2


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from ._server import run

    print(f"AutoBot {__version__}", file=sys.stderr)
    for line in settings.summary():
        print(f"  {line}", file=sys.stderr)
    run(settings)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autobot",
        description="AI assistant backend on Trio. Configured by AUTOBOT_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="serve the HTTP and WebSocket API (the default)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    configure_logging(settings.log_level)
    commands = {None: _serve, "serve": _serve}
    return commands[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
