#!/usr/bin/env python3
"""Serve AutoBot with Hypercorn's Trio worker: ``python run.py``.

Configuration comes from ``AUTOBOT_*`` environment variables (see README.md).
On a fresh machine, ``python3 dev.py serve`` creates the environment first.
"""

import sys

from autobot.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
