#!/usr/bin/env python3
"""Set up and run AutoBot from a fresh clone with nothing but python3.

    python3 dev.py serve   # create .venv, install AutoBot, run the server
    python3 dev.py test    # also install test tools, redis-server and chromium, lint, run the suite

Each step is skipped when already done: the virtual environment is reinstalled
only when pyproject.toml changes, and redis-server and chromium are installed
(with apt-get) only when they are not on the PATH. Extra arguments go to run.py or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".autobot-installed"


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def run(*command: str | Path) -> None:
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT)


def as_root(*command: str) -> None:
    """Run a system command as root: directly when we are root, else through sudo."""
    if os.geteuid() == 0:
        run(*command)
    elif shutil.which("sudo"):
        run("sudo", *command)
    else:
        sys.exit(f"dev.py: need root to run {' '.join(command)!r}; install it yourself and retry")


def apt_install(*packages: str) -> None:
    if not shutil.which("apt-get"):
        sys.exit(f"dev.py: please install {', '.join(packages)} (no apt-get on this machine)")
    say(f"installing {', '.join(packages)} with apt-get")
    env_prefix = ("env", "DEBIAN_FRONTEND=noninteractive")
    as_root(*env_prefix, "apt-get", "update", "-qq")
    as_root(*env_prefix, "apt-get", "install", "-y", "-qq", *packages)


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"dev.py: AutoBot needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        say("creating .venv")
        try:
            venv.create(VENV, with_pip=True)
        except subprocess.CalledProcessError:
            # Debian ships ensurepip separately.
            shutil.rmtree(VENV, ignore_errors=True)
            apt_install(f"python3.{sys.version_info.minor}-venv")
            venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    say(f"installing AutoBot{extras} into .venv")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--editable", f".{extras}")
    STAMP.write_text(wanted)


def ensure_redis_server() -> None:
    if not shutil.which("redis-server"):
        apt_install("redis-server")


def ensure_chromium() -> None:
    """The web page's tests drive Debian's chromium; Playwright never downloads a browser."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        apt_install("chromium")


def serve(args: list[str]) -> None:
    ensure_venv("")
    os.execv(PYTHON, [str(PYTHON), str(ROOT / "run.py"), *args])


def test(args: list[str]) -> None:
    ensure_venv("[test]")
    ensure_redis_server()
    ensure_chromium()
    bin_dir = VENV / "bin"
    say("lint: ruff")
    run(bin_dir / "ruff", "check", ".")
    run(bin_dir / "ruff", "format", "--check", ".")
    say("lint: flake8-async")
    run(bin_dir / "flake8", "autobot", "tests", "bench", "dev.py", "run.py")
    say("tests")
    os.execv(PYTHON, [str(PYTHON), "-m", "pytest", *args])


def main() -> None:
    commands = {"serve": serve, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    try:
        commands[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as error:
        sys.exit(error.returncode)


if __name__ == "__main__":
    main()
