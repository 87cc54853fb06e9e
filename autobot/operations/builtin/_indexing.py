"""``codebase_indexing``: every source file's language, size, lines and top-level symbols.

The per-file index goes to ``<data>/operations/<operation id>/index.jsonl``
(one JSON object a line: ``path``, ``language``, ``lines``, ``size``,
``symbols`` of ``{"name", "kind", "line"}``); the result holds a summary and
the first 1,000 entries.

**Symbols.** Python files are parsed with :mod:`ast`: the functions, async
functions and classes of the module body, at their ``def``/``class`` line. A
file that does not parse is a failed item. Other languages use one rule per
family (:data:`SYMBOL_RULES`): a declaration that starts at column 0, which in
every one of them is what a top-level declaration looks like (a method is
indented, a class body too), e.g. ``func Name`` in Go, ``pub fn name`` in Rust,
``export class Name`` in JavaScript. They are heuristics: a declaration split
oddly across lines (GNU-style C with the name on its own line) is missed.
Markdown contributes its ``#`` and ``##`` headings outside code fences.

**Reading.** Files are read in batches, each batch one ``file.io`` step in a
thread (the parsing happens there too); a batch that fails as a whole (its
step expired) is retried one file per item. A file over
:data:`MAX_FILE_BYTES` is skipped and listed as skipped, and text is decoded
as UTF-8 with ``errors="replace"``.

**Resume.** Entries are written to ``index.jsonl.partial`` at known byte
offsets; the checkpoint holds the offset after the last finished batch, the
path of that batch's last file, and the summary counters so far. A resume
truncates the partial file to that offset and goes on with the files sorted
after that path, so no entry is written twice and nothing finished is redone,
even if files were added or removed in between. Entries are not kept in the
checkpoint: 20,000 of them would make every save a megabyte. A partial file
shorter than the checkpoint says (the machine crashed before the page cache
reached the disk) restarts the index from the first file. A write the
operation abandoned when it was cancelled finishes in its thread before the
resume can truncate (a lock), or is dropped when it comes later (each run
owns the partial file by a token).
"""

from __future__ import annotations

import ast
import bisect
import heapq
import json
import os
import re
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...files import run_file_io, walk_files, write_at
from .._context import OperationContext
from .._registry import operation_type
from ._tree import GlobPatterns, batch_or_one_by_one

__all__ = [
    "DEFAULT_PATTERNS",
    "LANGUAGES",
    "MAX_FILE_BYTES",
    "SYMBOL_RULES",
    "IndexParams",
    "codebase_indexing",
    "index_source",
    "list_files",
    "read_capped",
]

#: Files larger than this are skipped (and listed as skipped), in bytes.
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Files per batch, each batch one thread step. bench/indexing_bench.py, 20,000 small
#: files: 64 → 88 %, 256 → 92 %, 512 → 91 % of the speed of the same per-file work
#: in a plain loop; 256 small files are about 25 ms of work.
BATCH_FILES = 256
# Bytes one batch may read before it ends early, so a batch of large files stays short.
_BATCH_BYTES = 8 * 1024 * 1024
#: Entries kept in the result; the rest are only in the index file.
RESULT_ENTRIES = 1000
# Symbols kept per file, and characters per symbol name.
_MAX_SYMBOLS = 1000
_MAX_NAME = 200
_LARGEST_KEPT = 10
_SKIPPED_KEPT = 100

DEFAULT_PATTERNS: tuple[str, ...] = tuple(
    f"**/*.{ext}"
    for ext in (
        *("py", "pyi", "js", "jsx", "mjs", "cjs", "ts", "tsx", "go", "rs", "java", "kt"),
        *("scala", "c", "h", "cc", "cpp", "hpp", "cs", "rb", "php", "swift", "sh", "bash"),
        *("sql", "md", "rst", "toml", "yaml", "yml", "json"),
    )
)

#: Language by file name suffix.
LANGUAGES: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".swift": "swift",
    ".cs": "csharp",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".rb": "ruby",
    ".php": "php",
    ".sh": "shell",
    ".bash": "shell",
    ".sql": "sql",
    ".md": "markdown",
    ".rst": "restructuredtext",
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".html": "html",
    ".css": "css",
}


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """One language family's declaration rules, matched in one pass over the text.

    Each rule is a regular expression matched at the start of a line, with a
    ``name`` group, and a kind (``None``: the ``kind`` group, lower-cased).
    """

    rules: tuple[tuple[str, str | None], ...]
    regex: re.Pattern[str]


def _family(*rules: tuple[str, str | None]) -> SymbolRules:
    alternatives = []
    for number, (pattern, _) in enumerate(rules):
        renamed = pattern.replace("(?P<name>", f"(?P<name{number}>")
        renamed = renamed.replace("(?P<kind>", f"(?P<kind{number}>")
        alternatives.append(f"(?P<rule{number}>{renamed})")
    return SymbolRules(rules, re.compile("^(?:" + "|".join(alternatives) + ")", re.MULTILINE))


_JS = _family(
    (
        r"(?:export[ \t]+(?:default[ \t]+)?)?(?:async[ \t]+)?function[ \t]*\*?[ \t]*"
        r"(?P<name>[A-Za-z_$][\w$]*)",
        "function",
    ),
    (
        r"(?:export[ \t]+(?:default[ \t]+)?)?(?:abstract[ \t]+)?class[ \t]+"
        r"(?P<name>[A-Za-z_$][\w$]*)",
        "class",
    ),
    (
        r"(?:export[ \t]+)?(?:const|let|var)[ \t]+(?P<name>[A-Za-z_$][\w$]*)[ \t]*"
        r"(?::[^=\n]+)?=[ \t]*(?:async[ \t]+)?(?:function\b|\([^)\n]*\)[ \t]*(?::[^=\n]+)?=>"
        r"|[A-Za-z_$][\w$]*[ \t]*=>)",
        "function",
    ),
    (r"(?:export[ \t]+)?(?:declare[ \t]+)?(?P<kind>interface|enum)[ \t]+(?P<name>[\w$]+)", None),
    (
        r"(?:export[ \t]+)?(?:declare[ \t]+)?type[ \t]+(?P<name>[\w$]+)[ \t]*(?:<[^>\n]*>)?"
        r"[ \t]*=",
        "type",
    ),
)
_GO = _family(
    (r"func[ \t]+(?P<name>[A-Za-z_]\w*)", "function"),
    (r"func[ \t]*\([^)\n]*\)[ \t]*(?P<name>[A-Za-z_]\w*)", "method"),
    (
        r"type[ \t]+(?P<name>[A-Za-z_]\w*)[ \t]+(?:\[[^\]\n]*\][ \t]*)?"
        r"(?P<kind>struct|interface)\b",
        None,
    ),
)
_RUST_VISIBILITY = r"(?:pub(?:\([^)\n]*\))?[ \t]+)?"
_RUST = _family(
    (
        _RUST_VISIBILITY + r"(?:(?:const|async|unsafe)[ \t]+)*(?:extern[ \t]+\"[^\"\n]*\"[ \t]+)?"
        r"fn[ \t]+(?P<name>\w+)",
        "function",
    ),
    (_RUST_VISIBILITY + r"(?P<kind>struct|enum|trait|mod|type|union)[ \t]+(?P<name>\w+)", None),
    (r"macro_rules![ \t]*(?P<name>\w+)", "macro"),
)
_JVM = _family(
    (
        r"(?:@\w+[ \t]+)*(?:(?:public|protected|private|internal|abstract|final|static|sealed"
        r"|open|data|partial|non-sealed|strictfp|case)[ \t]+)*(?P<kind>class|interface|enum|record"
        r"|object|trait|struct)[ \t]+(?P<name>\w+)",
        None,
    ),
    (
        r"(?:(?:public|private|internal|suspend|inline|override)[ \t]+)*(?:fun|func|def)[ \t]+"
        r"(?:<[^>\n]*>[ \t]*)?(?:[\w.]+\.)?(?P<name>\w+)",
        "function",
    ),
)
_C = _family(
    (
        r"(?:typedef[ \t]+)?(?P<kind>struct|union|enum|class)[ \t]+(?P<name>[A-Za-z_]\w*)"
        r"[ \t]*(?:[:{]|$)",
        None,
    ),
    (r"#[ \t]*define[ \t]+(?P<name>[A-Za-z_]\w*)", "macro"),
    (r"namespace[ \t]+(?P<name>[\w:]+)", "namespace"),
    # A type, a name and "(" with no ";" on the line: a function definition.
    (
        r"(?!(?:if|else|for|while|switch|return|do|case|typedef|struct|enum|union|class|namespace"
        r"|using|template)\b)(?:[A-Za-z_][\w:<>,]*[ \t*&]+)+(?P<name>[A-Za-z_~][\w:~]*)[ \t]*"
        r"\([^;{}\n]*(?:\{[ \t]*)?$",
        "function",
    ),
)
_RUBY = _family(
    (r"(?P<kind>class|module)[ \t]+(?P<name>[A-Z]\w*(?:::\w+)*)", None),
    (r"def[ \t]+(?:self\.)?(?P<name>\w+[?!=]?)", "method"),
)
_PHP = _family(
    (
        r"(?:(?:abstract|final|readonly)[ \t]+)*(?P<kind>class|interface|trait|enum)[ \t]+"
        r"(?P<name>\w+)",
        None,
    ),
    (r"function[ \t]+&?(?P<name>\w+)", "function"),
)
_SHELL = _family(
    (r"(?:function[ \t]+)?(?P<name>[A-Za-z_][\w.:-]*)[ \t]*\(\)", "function"),
    (r"function[ \t]+(?P<name>[A-Za-z_][\w.:-]*)", "function"),
)
_SQL = _family(
    (
        r"(?i:[ \t]*create[ \t]+(?:or[ \t]+replace[ \t]+)?(?:temp(?:orary)?[ \t]+)?"
        r"(?P<kind>table|view|function|procedure|index|trigger)[ \t]+"
        r"(?:if[ \t]+not[ \t]+exists[ \t]+)?(?P<name>[\w.\"`]+))",
        None,
    ),
)

#: The declaration rules of each language other than Python and Markdown: a
#: declaration at column 0 is a top-level one.
SYMBOL_RULES: dict[str, SymbolRules] = {
    "javascript": _JS,
    "typescript": _JS,
    "go": _GO,
    "rust": _RUST,
    "java": _JVM,
    "kotlin": _JVM,
    "scala": _JVM,
    "swift": _JVM,
    "csharp": _JVM,
    "c": _C,
    "cpp": _C,
    "ruby": _RUBY,
    "php": _PHP,
    "shell": _SHELL,
    "sql": _SQL,
    "toml": _family((r"\[\[?[ \t]*(?P<name>[^\]\n]+?)[ \t]*\]\]?", "table")),
    "yaml": _family((r"(?P<name>[A-Za-z_][\w.-]*)[ \t]*:(?:[ \t]|$)", "key")),
}

_PYTHON_KINDS: dict[type[ast.AST], str] = {
    ast.FunctionDef: "function",
    ast.AsyncFunctionDef: "async_function",
    ast.ClassDef: "class",
}
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_HEADING = re.compile(r"^ {0,3}(#{1,2})[ \t]+(.*?)(?:[ \t]+#+)?[ \t\r]*$")


# -- parameters -------------------------------------------------------------------------------


class IndexParams(BaseModel):
    """``path`` (a directory or file under the files root) and the glob ``patterns``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(max_length=4096)
    patterns: GlobPatterns = Field(default_factory=lambda: list(DEFAULT_PATTERNS))


# -- one file, without I/O -------------------------------------------------------------------


def language_of(path: str) -> str | None:
    """The language of ``path`` by its suffix, ``None`` when unknown."""
    suffix = os.path.splitext(path)[1].lower()
    return LANGUAGES.get(suffix)


def count_lines(data: bytes) -> int:
    """Lines as ``wc -l`` counts them, plus a last line without a newline."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def python_symbols(data: bytes, path: str = "<file>") -> list[dict[str, Any]]:
    """Top-level functions, async functions and classes; ``SyntaxError`` if it does not parse."""
    return [
        {"name": node.name, "kind": _PYTHON_KINDS[type(node)], "line": node.lineno}
        for node in ast.parse(data, filename=path).body
        if type(node) in _PYTHON_KINDS
    ]


def regex_symbols(language: str, text: str) -> list[dict[str, Any]]:
    """The symbols :data:`SYMBOL_RULES` finds for ``language``, in line order."""
    family = SYMBOL_RULES.get(language)
    if family is None:
        return []
    symbols, line, position = [], 1, 0
    for match in family.regex.finditer(text):
        number = int(str(match.lastgroup)[4:])
        line += text.count("\n", position, match.start())
        position = match.start()
        kind = family.rules[number][1] or match[f"kind{number}"].lower()
        symbols.append({"name": match[f"name{number}"][:_MAX_NAME], "kind": kind, "line": line})
    return symbols


def markdown_headings(text: str) -> list[dict[str, Any]]:
    """``#`` and ``##`` headings outside fenced code blocks."""
    headings, fence = [], ""
    for number, line in enumerate(text.split("\n"), 1):
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
        elif opened:
            fence = opened.group(1)
        elif (
            line.startswith(("#", " "))
            and (heading := _HEADING.match(line))
            and (name := heading[2].strip())
        ):
            headings.append({"name": name[:_MAX_NAME], "kind": "heading", "line": number})
    return headings


def index_source(path: str, data: bytes) -> dict[str, Any]:
    """The index entry of one file's bytes; ``SyntaxError``/``ValueError`` for bad Python."""
    language = language_of(path)
    if language == "python":
        symbols = python_symbols(data, path)
    elif language == "markdown":
        symbols = markdown_headings(data.decode("utf-8", errors="replace"))
    elif language in SYMBOL_RULES:
        symbols = regex_symbols(language, data.decode("utf-8", errors="replace"))
    else:
        symbols = []
    entry: dict[str, Any] = {
        "path": path,
        "language": language or "other",
        "lines": count_lines(data),
        "size": len(data),
        "symbols": symbols[:_MAX_SYMBOLS],
    }
    if len(symbols) > _MAX_SYMBOLS:
        entry["symbols_omitted"] = len(symbols) - _MAX_SYMBOLS
    return entry


# -- files, in a thread -------------------------------------------------------------------


def read_capped(path: str | os.PathLike[str], cap: int = MAX_FILE_BYTES) -> bytes | None:
    """The bytes of a regular file, ``None`` if it is over ``cap``; ``OSError`` otherwise.

    The last component is opened without following a link (the walk listed a
    file; a link put in its place since must not lead out of the root), and
    without blocking, in case a FIFO took its place. An unchanged file is read
    in one call of its own size: asking for ``cap`` bytes would allocate that
    much for every small file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{os.fspath(path)!r} is no longer a regular file")
        if info.st_size > cap:
            return None
        data = os.read(fd, info.st_size + 1)
        if len(data) > info.st_size:  # it grew since the stat: read on, up to the cap
            chunks = [data]
            while (size := sum(map(len, chunks))) <= cap and (chunk := os.read(fd, 1 << 16)):
                chunks.append(chunk[: cap + 1 - size])
            data = b"".join(chunks)
    finally:
        os.close(fd)
    return None if len(data) > cap else data


@dataclass(slots=True)
class FileResult:
    """What became of one file: an entry, an error (a failed item) or a reason to skip it."""

    path: str
    entry: dict[str, Any] | None = None
    line: bytes = b""  # the entry as a line of the index file
    error: str | None = None
    skipped: str | None = None
    recorded: bool = False  # the failure is already in the operation's failures


def _failed_file(path: str, error: str) -> FileResult:
    return FileResult(path, error=error, recorded=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _index_batch(base: Path, paths: Sequence[str]) -> list[FileResult]:
    results, budget, directory = [], _BATCH_BYTES, os.fspath(base)
    for path in paths:
        if budget <= 0:
            break  # the caller goes on with the rest in the next batch
        try:
            data = read_capped(os.path.join(directory, path))
            if data is None:
                results.append(FileResult(path, skipped=f"larger than {MAX_FILE_BYTES} bytes"))
                continue
            budget -= len(data)
            entry = index_source(path, data)
            results.append(FileResult(path, entry, _encode(entry).encode() + b"\n"))
        except (OSError, SyntaxError, ValueError, RecursionError) as error:
            results.append(FileResult(path, error=_describe(error)))
    return results


# -- the index file ------------------------------------------------------------------------

_index_lock = threading.Lock()
_index_owners: dict[str, object] = {}


def _claim_index(partial: Path, owner: object, offset: int) -> bool:
    """Own ``partial`` and cut it to ``offset``; False if it is shorter (start over)."""
    with _index_lock:
        _index_owners[str(partial)] = owner
        partial.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size < offset:
                os.ftruncate(fd, 0)
                return False
            os.ftruncate(fd, offset)
            return True
        finally:
            os.close(fd)


def _write_index(partial: Path, owner: object, offset: int, data: bytes) -> int:
    with _index_lock:
        if _index_owners.get(str(partial)) is not owner:
            return offset  # an abandoned write of an earlier run: its entries are redone
        return write_at(partial, offset, data)


def _finish_index(partial: Path, final: Path, owner: object, offset: int) -> list[dict]:
    """Cut, sync and rename the partial index; its first :data:`RESULT_ENTRIES` entries."""
    with _index_lock:
        if _index_owners.get(str(partial)) is not owner:
            raise RuntimeError("the index file was taken over by another run")
        fd = os.open(partial, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)
        del _index_owners[str(partial)]
    entries = []
    with open(final, encoding="utf-8") as index:
        for line in index:
            if len(entries) >= RESULT_ENTRIES:
                break
            entries.append(json.loads(line))
    return entries


# -- the operation ---------------------------------------------------------------------------


async def list_files(
    ctx: OperationContext, client_path: str, patterns: Sequence[str] = ("**/*",)
) -> tuple[Path, list[str], list[str]]:
    """The directory, the matching files (sorted, relative) and the names that are not UTF-8.

    ``client_path`` may name a single file: it is the one file, whatever the
    patterns. File names that are not UTF-8 cannot go into JSON results or
    checkpoints as they are, so they come back apart, shown escaped.
    """
    target = await ctx.resolve(client_path)
    is_dir = await run_file_io(os.path.isdir, target)
    if not is_dir:
        base, files = target.parent, [target.name]
    else:
        base, files = target, await walk_files(target, patterns)
    readable, unreadable = [], []
    for path in files:
        try:
            path.encode("utf-8")
            readable.append(path)
        except UnicodeEncodeError:
            unreadable.append(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return base, readable, unreadable


def _empty_summary() -> dict[str, Any]:
    return {
        "files": 0,
        "lines": 0,
        "bytes": 0,
        "symbols": 0,
        "languages": {},
        "largest": [],
        "failed": 0,
        "skipped": 0,
        "skipped_files": [],
    }


def _summarise(summary: dict[str, Any], results: Sequence[FileResult]) -> dict[str, Any]:
    """A new summary: ``summary`` with ``results`` added (the old one is left as it was)."""
    summary = {
        **summary,
        "languages": {name: dict(counts) for name, counts in summary["languages"].items()},
        "skipped_files": list(summary["skipped_files"]),
    }
    for result in results:
        if result.entry is not None:
            entry = result.entry
            summary["files"] += 1
            summary["lines"] += entry["lines"]
            summary["bytes"] += entry["size"]
            summary["symbols"] += len(entry["symbols"]) + entry.get("symbols_omitted", 0)
            language = summary["languages"].setdefault(entry["language"], {"files": 0, "lines": 0})
            language["files"] += 1
            language["lines"] += entry["lines"]
        elif result.skipped is not None:
            summary["skipped"] += 1
            if len(summary["skipped_files"]) < _SKIPPED_KEPT:
                summary["skipped_files"].append({"path": result.path, "reason": result.skipped})
        else:
            summary["failed"] += 1
    sized = [{"path": r.path, "size": r.entry["size"]} for r in results if r.entry is not None]
    summary["largest"] = heapq.nlargest(
        _LARGEST_KEPT, summary["largest"] + sized, key=lambda item: (item["size"], item["path"])
    )
    return summary


@operation_type("codebase_indexing", params=IndexParams)
async def codebase_indexing(ctx: OperationContext, params: IndexParams) -> dict[str, Any]:
    """Index the source files under ``path``: languages, lines, sizes, top-level symbols."""
    ctx.progress(step="listing files")
    base, files, unreadable = await list_files(ctx, params.path, params.patterns)
    operation_dir = Path(ctx.settings.data_dir) / "operations" / ctx.id
    partial, final = operation_dir / "index.jsonl.partial", operation_dir / "index.jsonl"
    owner = object()
    state: dict[str, Any] = ctx.resume_state or {
        "after": None,
        "offset": 0,
        "summary": _empty_summary(),
    }
    if not await run_file_io(_claim_index, partial, owner, state["offset"]):
        state = {"after": None, "offset": 0, "summary": _empty_summary()}
    start = 0 if state["after"] is None else bisect.bisect_right(files, state["after"])
    ctx.progress(total=len(files), processed=start, step="indexing")
    if start == 0 and unreadable:
        state["summary"]["failed"] += len(unreadable)
        for path in unreadable:
            ctx.fail_item(path, "the file name is not UTF-8")

    index = start
    while index < len(files):
        batch = files[index : index + BATCH_FILES]
        results = await batch_or_one_by_one(ctx, base, batch, _index_batch, _failed_file)
        lines = b"".join(result.line for result in results)
        offset = state["offset"]
        if lines:
            offset = await run_file_io(_write_index, partial, owner, offset, lines)
        summary = _summarise(state["summary"], results)
        for result in results:
            if result.error is not None and not result.recorded:
                ctx.fail_item(result.path, result.error)
        assert results, "a batch always indexes its first file"
        index += len(results)
        state = {"after": files[index - 1], "offset": offset, "summary": summary}
        await ctx.checkpoint(state, processed_items=index)

    ctx.progress(step="writing the index")
    entries = await run_file_io(_finish_index, partial, final, owner, state["offset"])
    summary = state["summary"]
    summary["languages"] = dict(
        sorted(summary["languages"].items(), key=lambda item: (-item[1]["files"], item[0]))
    )
    return {
        "path": params.path,
        "index_file": str(final.relative_to(Path(ctx.settings.data_dir))),
        "summary": summary,
        "entries": entries,
        "entries_omitted": max(0, summary["files"] - len(entries)),
    }
