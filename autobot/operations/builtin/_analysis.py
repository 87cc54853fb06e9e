"""Analyses of a tree in the files root: code complexity, dependencies, text content.

The three types share one way of walking: the files under ``path`` are listed
once (sorted), read and parsed a batch at a time in a file-I/O thread (ast
parsing included, so a tree of 20,000 files costs one thread hop per batch),
and folded into a running summary. The checkpoint holds that summary and the
last file folded into it: a resumed run goes on with the files that sort after
it, so no file is read twice, and files added or removed meanwhile are simply
met or missed in order.
"""

from __future__ import annotations

import ast
import heapq
import json
import math
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field

from ...files import run_file_io, walk_files
from .._context import OperationContext
from .._registry import operation_type
from ._tree import GlobPatterns

__all__ = ["STOP_WORDS", "smooth_idf", "terms", "words"]

#: Files read per file-I/O thread call, and the bytes after which a call stops early.
_BATCH = 48
_BATCH_BYTES = 16 * 1024 * 1024
#: Larger files are skipped (counted, not failed): generated code, data dumps.
_MAX_FILE_BYTES = 5 * 1024 * 1024


class _TreeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)


class _PatternParams(_TreeParams):
    patterns: GlobPatterns


# -- walking and batching (shared) ----------------------------------------------------------


def _listing_base(target: Path) -> tuple[Path, str | None]:
    """The directory to walk and, when ``target`` is one file, that file's name."""
    if target.is_dir():
        return target, None
    return target.parent, target.name


async def _tree(
    ctx: OperationContext, client_path: str, patterns: Sequence[str]
) -> tuple[Path, list[str]]:
    """The base directory and the sorted relative paths to analyse under ``client_path``.

    A path naming one file analyses that file alone, whatever the patterns.
    """
    ctx.progress(step="listing files", message=f"listing {client_path}")
    target = await ctx.resolve(client_path)
    base, single = await run_file_io(_listing_base, target)
    if single is not None:
        return base, [single]
    return base, await walk_files(base, patterns)


def _read(path: Path) -> bytes | None:
    """The file's bytes; ``None`` when it is larger than :data:`_MAX_FILE_BYTES`."""
    with path.open("rb") as file:
        data = file.read(_MAX_FILE_BYTES + 1)
    return None if len(data) > _MAX_FILE_BYTES else data


#: What a batch function returns per file: (error, None) for a failed file,
#: (None, None) for a skipped one, (None, value) for one analysed.
FileOutcome = tuple[str | None, Any]


def _batch(
    analyse: Callable[[str, bytes], Any], base: Path, paths: Sequence[str]
) -> list[FileOutcome]:
    """``analyse(path, data)`` for the first files of a batch; runs in a file-I/O thread.

    Stops once :data:`_BATCH_BYTES` were read (after one file at least), so one
    call stays well within its ``file.io`` budget.
    """
    outcomes: list[FileOutcome] = []
    read = 0
    for relative in paths:
        if read >= _BATCH_BYTES:
            break
        try:
            data = _read(base / relative)
            read += len(data or b"")
            outcomes.append((None, None if data is None else analyse(relative, data)))
        except SyntaxError as error:
            outcomes.append((f"syntax error at line {error.lineno}: {error.msg}", None))
        except (OSError, ValueError, RecursionError) as error:  # decoding errors are ValueErrors
            outcomes.append((f"{type(error).__name__}: {error}", None))
    return outcomes


async def _fold_files(
    ctx: OperationContext,
    base: Path,
    paths: Sequence[str],
    state: dict[str, Any],
    analyse: Callable[[str, bytes], Any],
    fold: Callable[[dict[str, Any], str, Any], None],
    *,
    step: str,
) -> None:
    """Analyse the files after ``state["after"]`` in batches, folding each into ``state``.

    Each file is an item: a failed one is recorded with its error, a skipped
    one counted in ``state["skipped"]``; the state is checkpointed after each.
    """
    after = state["after"]
    remaining = [path for path in paths if after is None or path > after]
    ctx.progress(total=state["done"] + len(remaining), processed=state["done"], step=step)
    start = 0
    while start < len(remaining):
        chunk = remaining[start : start + _BATCH]
        outcomes = await run_file_io(_batch, analyse, base, chunk)
        start += len(outcomes)
        for path, (error, value) in zip(chunk, outcomes, strict=False):
            state["after"] = path
            state["done"] += 1
            if error is not None:
                state["failed"] += 1
                ctx.fail_item(path, error)
            elif value is None:
                state["skipped"] += 1
            else:
                fold(state, path, value)
            await ctx.checkpoint(state, processed_items=state["done"])


def _new_state(**fields: Any) -> dict[str, Any]:
    return {"after": None, "done": 0, "failed": 0, "skipped": 0, **fields}


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else 0.0


# -- code_analysis ------------------------------------------------------------------------

#: Functions longer than this many lines are "long".
LONG_FUNCTION_LINES = 50
#: Functions whose blocks nest deeper than this are "deeply nested".
DEEP_NESTING = 4
_MOST_COMPLEX = 50
_LISTED = 100
_TOP_FILES = 20

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_ONE_BRANCH = (
    ast.If,
    ast.IfExp,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.ExceptHandler,
    ast.With,
    ast.AsyncWith,
    ast.Assert,
    ast.match_case,
)
_NESTING = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.TryStar,
    ast.Match,
)


def _measure(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(cyclomatic complexity estimate, deepest block nesting) of one function.

    Complexity is 1 plus one per ``if``/``elif``/conditional expression, loop,
    ``except``, ``with``, ``assert`` and ``case``, one per extra operand of
    ``and``/``or``, and one per ``if`` of a comprehension. Nested functions
    and classes are measured on their own, not here; lambdas count here.
    """
    complexity, deepest = 1, 0
    stack: list[tuple[ast.AST, int]] = [(statement, 0) for statement in function.body]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _DEFINITIONS):
            continue
        if isinstance(node, _ONE_BRANCH):
            complexity += 1
        elif isinstance(node, ast.BoolOp):
            complexity += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            complexity += len(node.ifs)
        if isinstance(node, _NESTING):
            depth += 1
            deepest = max(deepest, depth)
        for child in ast.iter_child_nodes(node):
            # An elif is the lone If of its parent's else: same depth as the parent.
            elif_ = (
                isinstance(node, ast.If) and isinstance(child, ast.If) and node.orelse == [child]
            )
            stack.append((child, depth - 1 if elif_ else depth))
    return complexity, deepest


def _code_file(path: str, data: bytes) -> dict[str, Any]:
    """Lines and functions of one file: ``[name, line, lines, complexity, depth, method]``."""
    tree = ast.parse(data, filename=path)
    functions: list[list[Any]] = []
    stack: list[tuple[ast.AST, str, bool]] = [(tree, "", False)]
    while stack:
        node, prefix, in_class = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                complexity, depth = _measure(child)
                functions.append([name, child.lineno, lines, complexity, depth, in_class])
                stack.append((child, name + ".", False))
            elif isinstance(child, ast.ClassDef):
                stack.append((child, prefix + child.name + ".", True))
            else:
                stack.append((child, prefix, in_class))
    functions.sort(key=lambda entry: entry[1])
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {"lines": lines, "functions": functions}


def _keep(entries: list[list[Any]], limit: int, key: Callable[[list[Any]], Any]) -> list[list[Any]]:
    entries.sort(key=key)
    return entries[:limit]


def _fold_code(state: dict[str, Any], path: str, value: dict[str, Any]) -> None:
    functions = value["functions"]
    state["files"] += 1
    state["lines"] += value["lines"]
    state["functions"] += len(functions)
    state["methods"] += sum(1 for entry in functions if entry[5])
    state["complexity_sum"] += sum(entry[3] for entry in functions)
    state["function_lines_sum"] += sum(entry[2] for entry in functions)
    rows = [[path, *entry[:5]] for entry in functions]  # path, name, line, lines, complexity, depth
    state["top"] = _keep(state["top"] + rows, _MOST_COMPLEX, lambda r: (-r[4], r[0], r[2]))
    long_rows = [row for row in rows if row[3] > LONG_FUNCTION_LINES]
    state["long_count"] += len(long_rows)
    state["long"] = _keep(state["long"] + long_rows, _LISTED, lambda r: (-r[3], r[0], r[2]))
    deep_rows = [row for row in rows if row[5] > DEEP_NESTING]
    state["deep_count"] += len(deep_rows)
    state["deep"] = _keep(state["deep"] + deep_rows, _LISTED, lambda r: (-r[5], r[0], r[2]))
    if functions:
        worst = max(functions, key=lambda entry: entry[3])
        summary = [path, len(functions), sum(entry[3] for entry in functions), worst[0], worst[3]]
        state["top_files"] = _keep(
            state["top_files"] + [summary], _TOP_FILES, lambda r: (-r[2], r[0])
        )


def _function_rows(rows: list[list[Any]]) -> list[dict[str, Any]]:
    keys = ("path", "name", "line", "lines", "complexity", "nesting_depth")
    return [dict(zip(keys, row, strict=True)) for row in rows]


class CodeAnalysisParams(_PatternParams):
    patterns: GlobPatterns = Field(default=["**/*.py"])


@operation_type("code_analysis", params=CodeAnalysisParams)
async def code_analysis(ctx: OperationContext, params: CodeAnalysisParams) -> dict[str, Any]:
    """Complexity, length and nesting of the functions and methods of the Python files.

    Each file is an item; one that does not parse is a failed item. The result
    has the totals and averages, the 50 most complex functions, and the longest
    (over 50 lines) and most deeply nested (over 4 blocks) ones, 100 of each.
    """
    state = ctx.resume_state or _new_state(
        files=0,
        lines=0,
        functions=0,
        methods=0,
        complexity_sum=0,
        function_lines_sum=0,
        top=[],
        long=[],
        long_count=0,
        deep=[],
        deep_count=0,
        top_files=[],
    )
    base, paths = await _tree(ctx, params.path, params.patterns)
    await _fold_files(ctx, base, paths, state, _code_file, _fold_code, step="analysing code")
    functions = state["functions"]
    return {
        "path": params.path,
        "files_analysed": state["files"],
        "files_failed": state["failed"],
        "files_skipped": state["skipped"],
        "lines": state["lines"],
        "functions": functions,
        "methods": state["methods"],
        "averages": {
            "complexity_per_function": _ratio(state["complexity_sum"], functions),
            "lines_per_function": _ratio(state["function_lines_sum"], functions),
            "functions_per_file": _ratio(functions, state["files"]),
        },
        "most_complex": _function_rows(state["top"]),
        "long_functions": {
            "threshold_lines": LONG_FUNCTION_LINES,
            "count": state["long_count"],
            "longest": _function_rows(state["long"]),
            "left_out": state["long_count"] - len(state["long"]),
        },
        "deep_nesting": {
            "threshold_depth": DEEP_NESTING,
            "count": state["deep_count"],
            "deepest": _function_rows(state["deep"]),
            "left_out": state["deep_count"] - len(state["deep"]),
        },
        "most_complex_files": [
            dict(
                zip(
                    ("path", "functions", "complexity", "worst_function", "worst_complexity"),
                    row,
                    strict=True,
                )
            )
            for row in state["top_files"]
        ],
    }


# -- dependency_analysis ------------------------------------------------------------------

_MANIFEST_PATTERNS = (
    "**/requirements*.txt",
    "**/requirements/*.txt",
    "**/pyproject.toml",
    "**/package.json",
)
_NAMES_KEPT = 500
_MANIFESTS_KEPT = 200
_MOST_IMPORTED = 20
_LISTED_MODULES = 1000

#: Distributions imported under another name (keys normalised): the common cases.
_IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    "attrs": ("attr", "attrs"),
    "beautifulsoup4": ("bs4",),
    "dnspython": ("dns",),
    "opencv_python": ("cv2",),
    "opencv_python_headless": ("cv2",),
    "pillow": ("pil",),
    "protobuf": ("google",),
    "psycopg2_binary": ("psycopg2",),
    "pycryptodome": ("crypto",),
    "pyjwt": ("jwt",),
    "pyserial": ("serial",),
    "python_dateutil": ("dateutil",),
    "python_dotenv": ("dotenv",),
    "pyyaml": ("yaml",),
    "pyzmq": ("zmq",),
    "scikit_image": ("skimage",),
    "scikit_learn": ("sklearn",),
    "setuptools": ("setuptools", "pkg_resources"),
}

_COMMENT = re.compile(r"(?:^|\s)#.*")
_REQUIREMENT = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical_name(name: str) -> str:
    """A distribution or module name compared loosely: lower case, ``-``/``.`` as ``_``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _requirement_name(spec: str) -> str | None:
    """The distribution a PEP 508 string (or a requirements-file line) names, if any."""
    spec = spec.strip()
    if spec.startswith(("-e ", "--editable")) or "://" in spec.split("@")[0]:
        egg = _EGG.search(spec)
        return egg[1] if egg else None
    if not spec or spec.startswith(("-", ".", "/")):
        return None  # an option, or a local path
    match = _REQUIREMENT.match(spec)
    return match[1] if match else None


def _names(specs: Any) -> list[str]:
    if not isinstance(specs, list):
        return []
    names = (_requirement_name(spec) for spec in specs if isinstance(spec, str))
    return sorted({name for name in names if name})[:_NAMES_KEPT]


def _manifest(path: str, data: bytes) -> dict[str, Any]:
    """The dependencies one manifest declares, by group."""
    name = path.rsplit("/", 1)[-1]
    text = data.decode("utf-8")
    if name == "package.json":
        package = json.loads(text)
        if not isinstance(package, dict):
            raise ValueError("package.json is not a JSON object")
        groups = {
            group: sorted(package[group])[:_NAMES_KEPT]
            for group in ("dependencies", "devDependencies")
            if isinstance(package.get(group), dict)
        }
        return {"path": path, "kind": "package.json", "language": "javascript", **groups}
    if name == "pyproject.toml":
        project = tomllib.loads(text).get("project", {})
        optional = project.get("optional-dependencies", {}) if isinstance(project, dict) else {}
        return {
            "path": path,
            "kind": "pyproject.toml",
            "language": "python",
            "dependencies": _names(
                project.get("dependencies") if isinstance(project, dict) else None
            ),
            "optional-dependencies": {
                group: _names(specs) for group, specs in sorted(optional.items())
            }
            if isinstance(optional, dict)
            else {},
        }
    lines = (_COMMENT.sub("", line).rstrip("\\ \t") for line in text.splitlines())
    return {
        "path": path,
        "kind": "requirements",
        "language": "python",
        "dependencies": _names(list(lines)),
    }


def module_names(paths: Sequence[str]) -> dict[str, str]:
    """The dotted module name of each Python file, packages found by their ``__init__.py``.

    ``src/pkg/sub/mod.py`` is ``pkg.sub.mod`` when ``pkg`` and ``pkg/sub``
    have an ``__init__.py`` and ``src`` has none; a file outside any package
    is a top-level module named by its stem.
    """
    python = [path for path in paths if path.endswith(".py")]
    packages = {path.rpartition("/")[0] for path in python if path.endswith("/__init__.py")}
    modules: dict[str, str] = {}
    for path in python:
        parts = path[:-3].split("/")
        top = len(parts) - 1
        while top > 0 and "/".join(parts[:top]) in packages:
            top -= 1
        names = parts[top:]
        if names[-1] == "__init__":
            names = names[:-1]
        if names:
            modules[path] = ".".join(names)
    return modules


def _own_top_level(modules: dict[str, str]) -> set[str]:
    """Top-level names that are the project's own: its modules' first components.

    Directories at the top of the tree (or of ``src/``) holding Python files
    count too, for namespace packages that have no ``__init__.py``.
    """
    names = {module.split(".")[0] for module in modules.values()}
    for path in modules:
        parts = path.split("/")
        if parts[0] == "src" and len(parts) > 2:
            names.add(parts[1])
        elif parts[0] != "src" and len(parts) > 1:
            names.add(parts[0])
    return names


def _imports(module: str | None, known: frozenset[str], path: str, data: bytes) -> dict[str, Any]:
    """What one Python file imports: absolute dotted names, relative ones resolved."""
    tree = ast.parse(data, filename=path)
    package = module if path.endswith("__init__.py") else (module or "").rpartition(".")[0]
    targets: set[str] = set()
    unresolved = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".") if package else []
                if module is None or node.level - 1 > len(parts):
                    unresolved += 1
                    continue
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *(node.module or "").split(".")]).strip(".")
            if not base:
                unresolved += 1
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {
        "modules": sorted(targets),
        "tops": sorted({target.split(".")[0] for target in targets}),
        "unresolved": unresolved,
    }


def _dependency_file(
    modules: dict[str, str], known: frozenset[str], path: str, data: bytes
) -> dict[str, Any]:
    if path.endswith(".py"):
        return {"imports": _imports(modules.get(path), known, path, data)}
    return {"manifest": _manifest(path, data)}


def _count(counter: dict[str, int], names: Sequence[str]) -> None:
    for name in names:
        counter[name] = counter.get(name, 0) + 1


def _fold_dependencies(state: dict[str, Any], path: str, value: dict[str, Any]) -> None:
    if "manifest" in value:
        state["manifests_found"] += 1
        if len(state["manifests"]) < _MANIFESTS_KEPT:
            state["manifests"].append(value["manifest"])
        return
    imports = value["imports"]
    state["python_files"] += 1
    state["unresolved"] += imports["unresolved"]
    _count(state["modules"], imports["modules"])
    _count(state["tops"], imports["tops"])


def _longest_known_prefix(name: str, known: frozenset[str]) -> str:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            return prefix
    return name


def _ranked(counts: dict[str, int], key: str, value: str, limit: int) -> list[dict[str, Any]]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{key: name, value: count} for name, count in ordered]


def _dependency_report(
    state: dict[str, Any], own: set[str], known: frozenset[str]
) -> dict[str, Any]:
    declared: dict[str, tuple[str, list[str]]] = {}  # normalised: (as written, manifests)
    for manifest in state["manifests"]:
        if manifest["language"] != "python":
            continue
        names = list(manifest["dependencies"])
        for group in manifest.get("optional-dependencies", {}).values():
            names.extend(group)
        for name in names:
            entry = declared.setdefault(canonical_name(name), (name, []))
            if manifest["path"] not in entry[1]:
                entry[1].append(manifest["path"])
    provides = {dist: {dist, *_IMPORT_NAMES.get(dist, ())} for dist in declared}
    provided = set().union(*provides.values()) if provides else set()
    stdlib = sys.stdlib_module_names
    third_party = {
        top: files for top, files in state["tops"].items() if top not in own and top not in stdlib
    }
    imported = {canonical_name(top) for top in third_party}
    undeclared = {
        top: files for top, files in third_party.items() if canonical_name(top) not in provided
    }
    unused = sorted(dist for dist, names in provides.items() if not names & imported)
    importers: dict[str, int] = {}
    for name, files in state["modules"].items():
        if name.split(".")[0] in own:
            target = _longest_known_prefix(name, known)
            importers[target] = importers.get(target, 0) + files
    return {
        "third_party_imports": _ranked(third_party, "module", "files", _LISTED_MODULES),
        "third_party_left_out": max(0, len(third_party) - _LISTED_MODULES),
        "stdlib_modules_imported": sum(
            1 for top in state["tops"] if top in stdlib and top not in own
        ),
        "undeclared_imports": _ranked(undeclared, "module", "files", _LISTED_MODULES),
        "unused_declarations": [
            {"name": declared[dist][0], "manifests": declared[dist][1]} for dist in unused
        ][:_LISTED_MODULES],
        "internal": {
            "modules": len(known),
            "top_level": sorted(own)[:_LISTED_MODULES],
            "import_edges": sum(importers.values()),
            "most_imported": _ranked(importers, "module", "importers", _MOST_IMPORTED),
        },
    }


class DependencyAnalysisParams(_TreeParams):
    pass


@operation_type("dependency_analysis", params=DependencyAnalysisParams)
async def dependency_analysis(
    ctx: OperationContext, params: DependencyAnalysisParams
) -> dict[str, Any]:
    """Declared dependencies against the imports of the Python files under ``path``.

    Manifests are ``requirements*.txt`` (and ``requirements/*.txt``),
    ``pyproject.toml`` (``[project]`` dependencies and optional dependencies)
    and ``package.json`` (dependencies and devDependencies); each manifest and
    each Python file is an item. Imports of the standard library
    (``sys.stdlib_module_names``) and of the project's own top-level packages
    and modules are told apart from third-party ones; names compare loosely
    (case, ``-`` against ``_``), with a short table of distributions imported
    under another name (``pyyaml`` is ``yaml``). Declared-but-unused names
    include tools that are never imported (linters, test runners): read them
    as candidates.
    """
    state = ctx.resume_state or _new_state(
        manifests=[], manifests_found=0, python_files=0, unresolved=0, modules={}, tops={}
    )
    base, paths = await _tree(ctx, params.path, (*_MANIFEST_PATTERNS, "**/*.py"))
    modules = module_names(paths)
    known = frozenset(modules.values())
    analyse = partial(_dependency_file, modules, known)
    await _fold_files(ctx, base, paths, state, analyse, _fold_dependencies, step="reading imports")
    return {
        "path": params.path,
        "manifests": state["manifests"],
        "manifests_found": state["manifests_found"],
        "manifests_left_out": state["manifests_found"] - len(state["manifests"]),
        "python_files": state["python_files"],
        "files_failed": state["failed"],
        "files_skipped": state["skipped"],
        "unresolved_relative_imports": state["unresolved"],
        **_dependency_report(state, _own_top_level(modules), known),
    }


# -- text: terms (shared with the knowledge types) ----------------------------------------

_STOP_LIST = """
    a about above after again against all also am an and any are aren't as at be because
    been before being below between both but by can can't cannot could couldn't did didn't
    do does doesn't doing don't down during each either else etc even ever every few for
    from further had hadn't has hasn't have haven't having he her here hers herself him
    himself his how however i if in into is isn't it it's its itself just let's like may
    me might more most much must my myself neither no nor not now of off often on once only
    or other ought our ours ourselves out over own per rather same shall she should
    shouldn't since so some such than that that's the their theirs them themselves then
    there there's these they this those though through thus to too under until up upon us
    very via was wasn't we were weren't what when where whether which while who whom whose
    why will with within without won't would wouldn't yes yet you your yours yourself
    yourselves
"""
#: A small English stop list: words too common to tell one text from another.
STOP_WORDS = frozenset(_STOP_LIST.split())

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased (letters only; ``don't`` is one word)."""
    return _WORD.findall(text.replace("\u2019", "'").lower())


def terms(text: str) -> list[str]:
    """The words of ``text`` that carry meaning: two letters or more, no stop words."""
    return [word for word in words(text) if len(word) > 1 and word not in STOP_WORDS]


def smooth_idf(documents: int, frequency: int) -> float:
    """``ln((1 + N) / (1 + df)) + 1``: rarer terms weigh more, and none weighs nothing."""
    return math.log((1 + documents) / (1 + frequency)) + 1


# -- semantic_analysis ------------------------------------------------------------------------

#: Words read per minute, for the reading-time estimate.
WORDS_PER_MINUTE = 200
#: Only this many files (the largest by word count) are paired by similarity...
SIMILARITY_FILES = 500
#: ...each by this many of its most frequent terms.
SIMILARITY_TERMS = 50
_TERMS_PER_FILE = 10
_TOP_TERMS = 50
_FILES_LISTED = 1000
_PAIRS_LISTED = 50
# The corpus-wide term table is cut back to its most common terms when it grows
# past the first number, so the checkpoint stays small on a huge tree.
_VOCABULARY_LIMIT, _VOCABULARY_KEPT = 20_000, 10_000

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_URL = re.compile(r"\w+://\S+")


def _docstrings(path: str, data: bytes) -> str:
    tree = ast.parse(data, filename=path)
    nodes = [tree, *(node for node in ast.walk(tree) if isinstance(node, _DEFINITIONS))]
    return "\n\n".join(doc for node in nodes if (doc := ast.get_docstring(node)))


def _text_file(path: str, data: bytes) -> dict[str, Any]:
    """Word counts of one file: its docstrings for Python, its prose for the rest."""
    if path.endswith(".py"):
        text = _docstrings(path, data)
    else:
        text = data.decode("utf-8", errors="replace")
        if path.endswith((".md", ".rst")):
            text = _FENCE.sub(" ", text)
    all_words = words(_URL.sub(" ", text))
    counts = Counter(word for word in all_words if len(word) > 1 and word not in STOP_WORDS)
    return {"words": len(all_words), "distinct": len(set(all_words)), "terms": dict(counts)}


def _fold_text(state: dict[str, Any], path: str, value: dict[str, Any]) -> None:
    count, counts = value["words"], value["terms"]
    state["files"] += 1
    state["words"] += count
    if len(state["per_file"]) < _FILES_LISTED:
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:_TERMS_PER_FILE]
        state["per_file"].append(
            {
                "path": path,
                "words": count,
                "distinct_words": value["distinct"],
                "reading_minutes": round(count / WORDS_PER_MINUTE, 1),
                "top_terms": [term for term, _ in top],
            }
        )
    vocabulary = state["vocabulary"]
    for term, times in counts.items():
        entry = vocabulary.setdefault(term, [0, 0])
        entry[0] += times
        entry[1] += 1
    if len(vocabulary) > _VOCABULARY_LIMIT:
        kept = sorted(vocabulary.items(), key=lambda item: (-item[1][1], -item[1][0]))
        state["vocabulary"] = dict(kept[:_VOCABULARY_KEPT])
        state["vocabulary_pruned"] = True
    if counts:
        vectors = state["vectors"]
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:SIMILARITY_TERMS]
        vectors[path] = [count, dict(top)]
        if len(vectors) > SIMILARITY_FILES:
            smallest = min(vectors, key=lambda name: (vectors[name][0], name))
            del vectors[smallest]


async def _similar_pairs(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The most similar pairs of the kept files: cosine of their TF-IDF vectors.

    Pairs are found through an inverted index (only files sharing a term are
    compared), one file per step so the event loop is never held for long.
    """
    files, vocabulary = state["files"], state["vocabulary"]
    weighted: dict[str, dict[str, float]] = {}
    for path, (_, counts) in state["vectors"].items():
        vector = {
            term: times * smooth_idf(files, vocabulary.get(term, [0, 1])[1])
            for term, times in counts.items()
        }
        norm = math.sqrt(sum(weight * weight for weight in vector.values()))
        if norm > 0:
            weighted[path] = {term: weight / norm for term, weight in vector.items() if weight}
    postings: dict[str, list[tuple[str, float]]] = {}
    for path in sorted(weighted):
        for term, weight in weighted[path].items():
            postings.setdefault(term, []).append((path, weight))
    best: list[tuple[float, str, str]] = []
    for path in sorted(weighted):
        scores: dict[str, float] = {}
        for term, weight in weighted[path].items():
            for other, other_weight in postings[term]:
                if other > path:
                    scores[other] = scores.get(other, 0.0) + weight * other_weight
        for other, score in scores.items():
            entry = (score, path, other)
            if len(best) < _PAIRS_LISTED:
                heapq.heappush(best, entry)
            elif entry > best[0]:
                heapq.heapreplace(best, entry)
        await trio.lowlevel.checkpoint()
    return [
        {"a": a, "b": b, "similarity": round(score, 4)}
        for score, a, b in sorted(best, key=lambda entry: (-entry[0], entry[1], entry[2]))
    ]


class SemanticAnalysisParams(_PatternParams):
    patterns: GlobPatterns = Field(default=["**/*.md", "**/*.txt", "**/*.rst", "**/*.py"])


@operation_type("semantic_analysis", params=SemanticAnalysisParams)
async def semantic_analysis(
    ctx: OperationContext, params: SemanticAnalysisParams
) -> dict[str, Any]:
    """Words and terms of the text, Markdown and reStructuredText files and Python docstrings.

    Each file is an item: its word count, distinct words, top terms (stop
    words dropped) and reading time at 200 words a minute. Across files: the
    top terms with the number of files using them, and the most similar pairs
    of files by the cosine of their TF-IDF vectors. Pairing is bounded: only
    the 500 largest files take part, each by its 50 most frequent terms (the
    result says how many files were compared).
    """
    state = ctx.resume_state or _new_state(
        files=0, words=0, per_file=[], vocabulary={}, vocabulary_pruned=False, vectors={}
    )
    base, paths = await _tree(ctx, params.path, params.patterns)
    await _fold_files(ctx, base, paths, state, _text_file, _fold_text, step="reading text")
    ctx.progress(step="pairing similar files")
    pairs = await _similar_pairs(state)
    top_terms = sorted(state["vocabulary"].items(), key=lambda item: (-item[1][0], item[0]))
    return {
        "path": params.path,
        "files_analysed": state["files"],
        "files_failed": state["failed"],
        "files_skipped": state["skipped"],
        "words": state["words"],
        "reading_minutes": round(state["words"] / WORDS_PER_MINUTE, 1),
        "files": state["per_file"],
        "files_left_out": state["files"] - len(state["per_file"]),
        "top_terms": [
            {"term": term, "count": count, "files": files}
            for term, (count, files) in top_terms[:_TOP_TERMS]
        ],
        "vocabulary_size": len(state["vocabulary"]),
        "vocabulary_pruned": state["vocabulary_pruned"],
        "similar_pairs": pairs,
        "similarity": {
            "files_compared": len(state["vectors"]),
            "files_limit": SIMILARITY_FILES,
            "terms_per_file": SIMILARITY_TERMS,
            "weighting": "term count × (ln((1 + files) / (1 + files with the term)) + 1), cosine",
        },
    }
