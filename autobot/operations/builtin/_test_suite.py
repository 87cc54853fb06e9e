"""Test suites: pytest run once per test file, each file one item.

``comprehensive_test_suite`` runs every test file under a path,
``integration_testing`` the integration ones (by file name or by marker).
Each test file runs in a pytest subprocess of its own, within the profile's
``per_item_s``: a file that hangs is killed with its whole process group and
the next one runs. Failing tests are results, not failures of the operation;
an item fails only when pytest could not run the file at all (an internal or
usage error, a crash, the per-file deadline).

The child is configured only by what lies inside the files root: the nearest
pytest configuration file between the test file and the files root, or an
empty one of our own, never the server's project configuration or its
``PYTEST_*`` and ``AUTOBOT_*`` environment. Reports go to a scratch directory
under ``<data>/operations/<id>/`` that is removed when the run ends.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..._errors import AutoBotError
from ...files import run_file_io, walk_files
from .._context import OperationContext, OperationFailed
from .._registry import operation_type

__all__ = [
    "SuiteParams",
    "child_environment",
    "comprehensive_test_suite",
    "integration_testing",
    "scratch_directory",
    "short_output",
]

TEST_FILE_PATTERNS = ("**/test_*.py", "**/*_test.py")
INTEGRATION_PATTERNS = (
    "**/test_*integration*.py",
    "**/*integration*_test.py",
    "**/integration/**/test_*.py",
    "**/integration/**/*_test.py",
)

# Entries kept in a result: per-file reports, and failed tests over all files.
_FILES_KEPT = 1000
_FAILED_TESTS_KEPT = 1000
_FAILED_TESTS_PER_FILE = 20
_MESSAGE_CHARS = 300

# pytest's exit statuses that still mean "the tests ran" (some may have failed).
_RAN = {0: "all passed", 1: "tests failed", 5: "no tests collected"}
_DID_NOT_RUN = {2: "interrupted", 3: "internal error", 4: "usage error"}

# The files pytest reads its configuration from, in its order of precedence, and
# the text a shared file must hold to count (pytest's own rule, by section name).
_CONFIG_FILES: tuple[tuple[str, str | None], ...] = (
    ("pytest.toml", None),
    (".pytest.toml", None),
    ("pytest.ini", None),
    (".pytest.ini", None),
    ("pyproject.toml", "[tool.pytest"),
    ("tox.ini", "[pytest]"),
    ("setup.cfg", "[tool:pytest]"),
)
_CONFIG_READ_LIMIT = 1 << 20

_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")
_SUMMARY_TIME = re.compile(r"\bin (\d+(?:\.\d+)?)s\b")
_SUMMARY_KEYS = {
    "passed": "passed",
    "xpassed": "passed",
    "failed": "failed",
    "error": "errors",
    "errors": "errors",
    "skipped": "skipped",
    "xfailed": "skipped",
}
_MARKER_KEYWORDS = frozenset({"and", "or", "not"})


class SuiteParams(BaseModel):
    """``path``: a directory of tests (or one test file) under the files root."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)


class IntegrationParams(SuiteParams):
    """``marker``: run ``-m marker`` over every test file instead of choosing files by name."""

    marker: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )

    @field_validator("marker")
    @classmethod
    def _not_an_operator(cls, marker: str | None) -> str | None:
        if marker in _MARKER_KEYWORDS:
            raise ValueError(f"{marker!r} is an operator of marker expressions, not a marker")
        return marker


# -- helpers shared with the other subprocess-running types -----------------------------------


def child_environment() -> dict[str, str]:
    """The server's environment for a child process, minus what would configure it.

    ``AUTOBOT_*`` belongs to the server, ``PYTEST_*`` (``PYTEST_ADDOPTS``,
    ``PYTEST_PLUGINS``, ...) would change how a child pytest runs; bytecode is
    not written, so running a tree leaves no ``__pycache__`` in the files root.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AUTOBOT_", "PYTEST_"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _make_scratch(base: Path, prefix: str) -> Path:
    base = base.absolute()
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))


def _remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with suppress(OSError):  # other runs of the operation may still use it
        path.parent.rmdir()


@asynccontextmanager
async def scratch_directory(ctx: OperationContext) -> AsyncIterator[Path]:
    """A fresh absolute directory under ``<data>/operations/<id>/``, removed afterwards.

    Removed however the block ends, cancellation included (the removal is
    shielded, and bounded by ``file.io``).
    """
    base = Path(ctx.settings.data_dir) / "operations" / ctx.id
    path = await run_file_io(_make_scratch, base, ctx.type)
    try:
        yield path
    finally:
        with trio.CancelScope(shield=True):
            await run_file_io(_remove_scratch, path)


def short_output(*streams: bytes) -> str:
    """The last non-empty line of the first stream that has one, cut short."""
    for stream in streams:
        lines = [line.strip() for line in stream.decode(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        if lines:
            return _short(lines[-1])
    return ""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


# -- which configuration a test file runs under ---------------------------------------------


def _holds_config(candidate: Path, section: str | None) -> bool:
    if not candidate.is_file():
        return False
    if section is None:
        return True
    try:
        with candidate.open(encoding="utf-8", errors="replace") as file:
            return section in file.read(_CONFIG_READ_LIMIT)
    except OSError:
        return False


def _config_for(
    test_file: Path, files_root: Path, fallback: Path, run_dir: Path
) -> tuple[Path, Path]:
    """``(config file, rootdir)`` for one test file: the nearest one up to the files root.

    pytest would go on searching above the files root and could pick up the
    server's own project configuration; the search stops at the root, and
    with nothing found the child gets ``fallback`` (an empty ``pytest.ini``)
    and the operation's directory as its rootdir.
    """
    root = Path(os.path.realpath(files_root))
    directory = test_file.parent
    while directory == root or root in directory.parents:
        for name, section in _CONFIG_FILES:
            if _holds_config(directory / name, section):
                return directory / name, directory
        directory = directory.parent
    return fallback, run_dir


def _write_empty_config(scratch: Path) -> Path:
    config = scratch / "pytest.ini"
    config.write_text("")
    return config


def _pytest_installed() -> bool:
    return importlib.util.find_spec("pytest") is not None


# -- reading what pytest reported -----------------------------------------------------------


def _empty_counts() -> dict[str, Any]:
    return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "duration_s": 0.0}


def _problem_message(element: ET.Element) -> str:
    message = (element.get("message") or "").strip()
    if message and message != "collection failure":
        return _short(message)
    lines = [line.strip() for line in (element.text or "").splitlines() if line.strip()]
    raised = [line[1:].strip() for line in lines if line.startswith("E ")]
    return _short((raised or lines or [message])[-1])


def _test_id(relative: str, module: str, classname: str, name: str) -> str:
    """A pytest-style node id (``dir/test_x.py::TestC::test_a``) from JUnit names."""
    if not classname:  # a collection error or a module-level skip: the name is the module
        return relative
    if classname == module:
        return f"{relative}::{name}"
    if classname.startswith(module + "."):
        return f"{relative}::{classname[len(module) + 1 :].replace('.', '::')}::{name}"
    return f"{relative}::{classname}::{name}"


def _seconds(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def _read_junit(xml_path: Path, relative: str, module: str) -> dict[str, Any] | None:
    """Counts and failed tests from pytest's JUnit XML; ``None`` without a readable report.

    The report is deleted once read.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return None
    finally:
        with suppress(OSError):
            xml_path.unlink()
    counts = _empty_counts()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts["duration_s"] = sum(_seconds(suite.get("time")) for suite in suites)
    problems: list[dict[str, str]] = []
    for case in root.iter("testcase"):
        found = [("failed", case.find("failure")), ("errors", case.find("error"))]
        found = [(kind, element) for kind, element in found if element is not None]
        for kind, element in found:
            counts[kind] += 1
            test = _test_id(relative, module, case.get("classname", ""), case.get("name", ""))
            outcome = "failed" if kind == "failed" else "error"
            problems.append(
                {"test": test, "outcome": outcome, "message": _problem_message(element)}
            )
        if not found:
            counts["skipped" if case.find("skipped") is not None else "passed"] += 1
    counts["problems"] = problems
    return counts


def _counts_from_summary(stdout: bytes) -> dict[str, Any] | None:
    """Counts from pytest's closing summary line (``1 failed, 2 passed in 0.12s``)."""
    lines = stdout.decode(errors="replace").strip().splitlines()
    for line in reversed(lines[-5:]):
        duration = _SUMMARY_TIME.search(line)
        if duration is None:
            continue
        counts = _empty_counts()
        counts["duration_s"] = float(duration.group(1))
        for number, word in _SUMMARY_COUNT.findall(line):
            counts[_SUMMARY_KEYS[word]] += int(number)
        counts["problems"] = []
        return counts
    return None


class PytestDidNotRun(AutoBotError):
    """pytest could not run a test file: the item fails (failing tests do not)."""

    code = "pytest_did_not_run"


def _check_ran(exit_code: int, counts: dict[str, Any] | None, output: str) -> None:
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = str(-exit_code)
        raise PytestDidNotRun(f"pytest was killed by signal {name}")
    if exit_code in _RAN and (counts is not None or exit_code != 1):
        return
    if exit_code == 2 and counts is not None and counts["errors"]:
        return  # collection errors: the file ran, and its errors are results
    meaning = _DID_NOT_RUN.get(exit_code, "no report" if exit_code == 1 else "unexpected status")
    raise PytestDidNotRun(
        f"pytest exited with status {exit_code} ({meaning})" + (f": {output}" if output else "")
    )


# -- running the files ---------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """What one run of a test file needs besides its name."""

    ctx: OperationContext
    run_dir: Path
    scratch: Path
    empty_config: Path
    pytest_args: tuple[str, ...]
    env: dict[str, str]


def _module_of(test_file: Path, rootdir: Path) -> str:
    relative = os.path.relpath(test_file, rootdir).replace(os.sep, "/")
    return relative.removesuffix(".py").replace("/", ".")


async def _run_test_file(run: _Run, relative: str, number: int) -> dict[str, Any]:
    """Run one test file as an item; its report entry, whether or not pytest could run it."""
    entry: dict[str, Any] = {"file": relative, "status": "not_run", "exit_code": None}
    entry.update(_empty_counts())
    entry["wall_s"] = 0.0
    counts: dict[str, Any] | None = None
    async with run.ctx.item(relative) as outcome:
        test_file = run.run_dir / relative
        config, rootdir = await run_file_io(
            _config_for, test_file, run.ctx.files_root, run.empty_config, run.run_dir
        )
        xml_path = run.scratch / f"report-{number}.xml"
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(config),
            f"--rootdir={rootdir}",
            f"--junitxml={xml_path}",
            *run.pytest_args,
            str(test_file),  # absolute: a name such as "-x_test.py" is not an option
        ]
        started = trio.current_time()
        completed = await run.ctx.run_process(argv, cwd=run.run_dir, env=run.env)
        entry["wall_s"] = round(trio.current_time() - started, 3)
        entry["exit_code"] = completed.returncode
        module = _module_of(test_file, rootdir)
        counts = await run_file_io(_read_junit, xml_path, relative, module)
        if counts is None:
            counts = _counts_from_summary(completed.stdout)
        _check_ran(completed.returncode, counts, short_output(completed.stderr, completed.stdout))
    if counts is not None:
        entry.update({key: counts[key] for key in ("passed", "failed", "errors", "skipped")})
        entry["duration_s"] = round(counts["duration_s"], 3)
        entry["failed_tests"] = counts["problems"]
    if not outcome.ok:
        entry["error"] = outcome.error
    else:
        entry["status"] = _status_of(entry)
    return entry


def _status_of(entry: dict[str, Any]) -> str:
    if entry["failed"] or entry["errors"]:
        return "failed"
    if entry["passed"]:
        return "passed"
    return "skipped" if entry["skipped"] else "no_tests"


def _new_state() -> dict[str, Any]:
    totals = {"files": 0, "files_passed": 0, "files_failed": 0, "files_not_run": 0}
    totals.update(_empty_counts())
    return {
        "done": [],
        "files": [],
        "files_omitted": 0,
        "failed_tests_kept": 0,
        "totals": totals,
    }


def _has_problems(entry: dict[str, Any]) -> bool:
    return entry["status"] in ("failed", "not_run")


def _record(state: dict[str, Any], entry: dict[str, Any]) -> None:
    """Fold one file's entry into the state: totals always, the entry itself within the caps.

    Past the cap, an entry with failures takes the place of a clean one kept
    earlier, so the files a reader needs are the ones the result keeps.
    """
    state["done"].append(entry["file"])
    totals = state["totals"]
    totals["files"] += 1
    key = {"passed": "files_passed", "failed": "files_failed", "not_run": "files_not_run"}
    if entry["status"] in key:
        totals[key[entry["status"]]] += 1
    for name in ("passed", "failed", "errors", "skipped"):
        totals[name] += entry[name]
    totals["duration_s"] = round(totals["duration_s"] + entry["duration_s"], 3)

    problems = entry.pop("failed_tests", [])
    room = min(_FAILED_TESTS_PER_FILE, _FAILED_TESTS_KEPT - state["failed_tests_kept"])
    if problems:
        entry["failed_tests"] = problems[: max(0, room)]
        entry["failed_tests_omitted"] = len(problems) - len(entry["failed_tests"])
        state["failed_tests_kept"] += len(entry["failed_tests"])

    files = state["files"]
    if len(files) < _FILES_KEPT:
        files.append(entry)
        return
    state["files_omitted"] += 1
    if _has_problems(entry):
        for index, kept in enumerate(files):
            if not _has_problems(kept):
                del files[index]
                files.append(entry)
                return


async def run_test_files(
    ctx: OperationContext,
    path: str,
    patterns: Sequence[str],
    pytest_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Run each test file matching ``patterns`` under ``path`` (or the one file ``path`` names).

    Resumes after the last finished file: ``state["done"]`` lists every file
    run so far, each entry of ``state["files"]`` is a file's report.
    """
    if not await run_file_io(_pytest_installed):
        raise OperationFailed("pytest is not installed in the server's Python environment")
    target = await ctx.resolve(path)
    if await run_file_io(os.path.isdir, target):
        run_dir, test_files = target, await walk_files(target, patterns)
    else:
        run_dir, test_files = target.parent, [target.name]
    state = ctx.resume_state or _new_state()
    done = set(state["done"])
    pending = [name for name in test_files if name not in done]
    ctx.progress(total=len(done) + len(pending), processed=len(done), step="running tests")
    async with scratch_directory(ctx) as scratch:
        empty_config = await run_file_io(_write_empty_config, scratch)
        run = _Run(ctx, run_dir, scratch, empty_config, tuple(pytest_args), child_environment())
        for number, relative in enumerate(pending):
            entry = await _run_test_file(run, relative, number)
            _record(state, entry)
            ctx.progress(message=_describe(entry))
            await ctx.checkpoint(state, processed_items=len(state["done"]))
    return {
        "path": path,
        "totals": state["totals"],
        "files": state["files"],
        "files_omitted": state["files_omitted"],
    }


def _describe(entry: dict[str, Any]) -> str:
    if entry["status"] == "not_run":
        return f"{entry['file']}: not run ({entry.get('error', 'failed')})"
    counts = ", ".join(
        f"{entry[name]} {name}" for name in ("passed", "failed", "errors", "skipped") if entry[name]
    )
    return f"{entry['file']}: {counts or 'no tests'}"


@operation_type("comprehensive_test_suite", params=SuiteParams, checkpoint_every_item=True)
async def comprehensive_test_suite(ctx: OperationContext, params: SuiteParams) -> dict[str, Any]:
    """Run every test file (``test_*.py``, ``*_test.py``) under a path, one pytest per file.

    Result: totals over all files, and per file the counts of passed, failed,
    errored and skipped tests, the duration, and the failed tests by name
    with a short message.
    """
    return await run_test_files(ctx, params.path, TEST_FILE_PATTERNS)


@operation_type("integration_testing", params=IntegrationParams, checkpoint_every_item=True)
async def integration_testing(ctx: OperationContext, params: IntegrationParams) -> dict[str, Any]:
    """Run the integration tests under a path: files named for it, or tests with a marker.

    Without ``marker``: ``test_*integration*.py`` files and test files under an
    ``integration`` directory. With it: ``pytest -m <marker>`` over every test file.
    """
    if params.marker is None:
        return await run_test_files(ctx, params.path, INTEGRATION_PATTERNS)
    result = await run_test_files(ctx, params.path, TEST_FILE_PATTERNS, ("-m", params.marker))
    result["marker"] = params.marker
    return result
