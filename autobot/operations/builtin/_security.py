"""``security_scan``: hard-coded secrets and dangerous Python calls under a directory.

Every rule is one :class:`Rule` in :data:`RULES`, with a stable id, a severity
and a message. A rule's regular expression runs over the text of the files it
applies to; a rule marked ``ast`` is checked on the syntax tree instead in
Python files that parse, so a call or an assignment in a comment or a string
is not a finding there. In Python files that do not parse (Python 2, a
template), the regular expression stands in, so a broken file is not a blind
spot. Python files are ``.py``, ``.pyw``, ``.pyi`` and files whose first line
is a ``python`` shebang. The Python call rules apply to Python files only: the
same words in Markdown or JavaScript are another language's business.

A secret is not reported when its value is empty or an obvious placeholder
(``changeme``, ``<password>``, ``${TOKEN}``, ``xxxx``, AWS's documented
``...EXAMPLE`` key, ...). The snippet of a finding is its line with every
secret found on it masked, keeping its first four characters.

Why this table and not a scanner library: bandit 1.9.4 and detect-secrets
1.5.0 were run on the tree of ``tests/operations/test_security_scan.py`` (19
planted findings covering the 14 rules, and clean files). bandit found the 8
dangerous calls of the ``.py`` file, as the syntax tree checks here do, but
not the call in a script named by its shebang, nor the one in a Python 2 file
it cannot parse; its hard-coded password check reported ``""``,
``"<your-secret>"`` and ``TOKEN_TYPE = "bearer"`` in the clean file; it knows
no token formats and reads only Python. detect-secrets found the AWS, GitHub,
Slack, private-key and keyword lines, but the Google API key only as a "high
entropy string" and not the ``apiToken`` assignment in JavaScript, and it
reported ``api_key = "changeme"`` and AWS's documented ``AKIAIOSFODNN7EXAMPLE``
in the clean file. Each covers half of the rules, with its own false
positives; both together would still need the placeholder and masking logic
here, read the files themselves outside the ``file.io`` limiter, and bring
their plugin machinery as two new dependencies. The table is short enough to
read whole, and a rule is one entry.
"""

from __future__ import annotations

import ast
import bisect
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._context import OperationContext
from .._registry import operation_type
from ._indexing import MAX_FILE_BYTES, list_files, read_capped
from ._tree import batch_or_one_by_one

__all__ = ["RULES", "Rule", "ScanParams", "scan_source", "security_scan"]

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")

#: Findings kept in the result (the most severe first); the rest are only counted.
RESULT_FINDINGS = 1000
_BATCH_FILES = 64
_SNIPPET_CHARS = 200
_SKIPPED_KEPT = 100
# A file with a NUL byte in its first this many bytes is binary, and skipped.
_BINARY_PROBE = 8192


@dataclass(frozen=True, slots=True)
class Rule:
    """One thing the scan looks for.

    ``pattern`` finds it in text (group ``secret``, if any, is the value masked
    in snippets and tested against the placeholders). ``files``: ``any`` file or
    ``python`` files only. ``ast``: in a Python file that parses, the syntax tree
    check of the same id is used instead of ``pattern``. ``config_pattern``, if
    any, also runs on configuration files, whose values need no quotes.
    """

    id: str
    severity: Severity
    message: str
    pattern: re.Pattern[str]
    files: Literal["any", "python"] = "any"
    ast: bool = False
    config_pattern: re.Pattern[str] | None = None


_SECRET_NAME = r"[\w.-]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key)"


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags | re.MULTILINE)


#: Every rule of the scan.
RULES: tuple[Rule, ...] = (
    Rule(
        "aws-access-key-id",
        "high",
        "AWS access key id",
        _compile(r"\b(?P<secret>(?:AKIA|ASIA)[0-9A-Z]{16})\b"),
    ),
    Rule(
        "aws-secret-access-key",
        "critical",
        "AWS secret access key",
        _compile(
            r"aws_?secret_?(?:access_?)?key[\"']?[ \t]*[:=>]+[ \t]*[\"']?"
            r"(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
    ),
    Rule(
        "github-token",
        "critical",
        "GitHub token",
        _compile(
            r"\b(?P<secret>(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})\b"
        ),
    ),
    Rule(
        "slack-token",
        "high",
        "Slack token",
        _compile(r"\b(?P<secret>xox[baprs]-[A-Za-z0-9-]{10,250})"),
    ),
    Rule(
        "google-api-key",
        "medium",
        "Google API key",
        _compile(r"\b(?P<secret>AIza[0-9A-Za-z_\-]{35})(?![0-9A-Za-z_\-])"),
    ),
    Rule(
        "private-key",
        "critical",
        "private key block",
        _compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ),
    Rule(
        "hardcoded-secret",
        "high",
        "password, secret, token or API key assigned a string literal",
        _compile(
            rf"(?<![\w.-])(?P<name>{_SECRET_NAME})[\"']?[ \t]*(?::=|=>|=|:)[ \t]*"
            r"(?P<quote>[\"'])(?P<secret>[^\"'\n]*)(?P=quote)",
            re.IGNORECASE,
        ),
        ast=True,
        config_pattern=_compile(
            rf"^[ \t]*(?:export[ \t]+)?(?P<name>{_SECRET_NAME})[ \t]*[:=][ \t]*"
            r"(?P<secret>[^\s\"'#;,()\[\]{}$%<>]+)[ \t]*\r?$",
            re.IGNORECASE,
        ),
    ),
    Rule(
        "python-eval",
        "high",
        "eval() runs arbitrary code",
        _compile(r"(?<![\w.])eval[ \t]*\("),
        files="python",
        ast=True,
    ),
    Rule(
        "python-exec",
        "high",
        "exec() runs arbitrary code",
        _compile(r"(?<![\w.])exec[ \t]*\("),
        files="python",
        ast=True,
    ),
    Rule(
        "python-pickle-load",
        "high",
        "unpickling untrusted data runs arbitrary code",
        _compile(r"\b(?:c?[Pp]ickle|_pickle|dill)\.loads?[ \t]*\("),
        files="python",
        ast=True,
    ),
    Rule(
        "python-yaml-load",
        "medium",
        "yaml.load without SafeLoader can build arbitrary objects; use yaml.safe_load",
        _compile(
            r"\byaml\.(?:unsafe_)?load(?:_all)?[ \t]*\((?![^)\n]*Loader[ \t]*=[ \t]*"
            r"(?:yaml\.)?C?(?:Safe|Base)Loader)"
        ),
        files="python",
        ast=True,
    ),
    Rule(
        "python-subprocess-shell",
        "high",
        "subprocess with shell=True is open to shell injection",
        _compile(
            r"\bsubprocess\.(?:(?:run|call|check_call|check_output|Popen)[ \t]*\([^\n]*"
            r"\bshell[ \t]*=[ \t]*True|getoutput[ \t]*\(|getstatusoutput[ \t]*\()"
        ),
        files="python",
        ast=True,
    ),
    Rule(
        "python-os-system",
        "high",
        "os.system runs a shell command",
        _compile(r"\bos\.system[ \t]*\("),
        files="python",
        ast=True,
    ),
    Rule(
        "python-os-popen",
        "high",
        "os.popen runs a shell command",
        _compile(r"\bos\.popen[ \t]*\("),
        files="python",
        ast=True,
    ),
)
_RULES_BY_ID = {rule.id: rule for rule in RULES}
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}

_PLACEHOLDER = re.compile(
    r"""(?ix)
    \s* |
    .*(?:example|placeholder|changeme|change[_-]me|changeit|your[_-]|dummy|sample|redacted
        |xxxx|\*\*\*|<[^>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|%\([^)]*\)s).* |
    \$\w+ | %s | \[[^\]]*\] | (.)\1* |
    none|null|nil|true|false|secret|password|passwd|token|test|testing|fake|mock|todo|\.\.\.
    """
)
_CONFIG_SUFFIXES = (".env", ".ini", ".cfg", ".conf", ".properties", ".yaml", ".yml")
_PYTHON_SUFFIXES = (".py", ".pyw", ".pyi")
_SECRET_NAME_AT_END = re.compile(
    r"(?:password|passwd|secret|token|api_?key|access_?key|private_?key)$", re.IGNORECASE
)
_CALLS: dict[str, frozenset[str]] = {
    "python-eval": frozenset({"eval", "builtins.eval"}),
    "python-exec": frozenset({"exec", "builtins.exec"}),
    "python-pickle-load": frozenset(
        f"{module}.{name}"
        for module in ("pickle", "cPickle", "_pickle", "dill")
        for name in ("load", "loads")
    ),
    "python-yaml-load": frozenset(
        {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all"}
    ),
    "python-subprocess-shell": frozenset(
        f"subprocess.{name}"
        for name in ("run", "call", "check_call", "check_output", "Popen", "getoutput")
    )
    | {"subprocess.getstatusoutput"},
    "python-os-system": frozenset({"os.system"}),
    "python-os-popen": frozenset({"os.popen"}),
}
_SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader")


class ScanParams(BaseModel):
    """``path``: the directory (or file) under the files root to scan."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(max_length=4096)


# -- one file, without I/O -------------------------------------------------------------------


def is_placeholder(value: str) -> bool:
    """An empty value, or one that only stands for a secret (``changeme``, ``${X}``, ...)."""
    return _PLACEHOLDER.fullmatch(value) is not None


@dataclass(slots=True)
class _Hit:
    rule: str
    line: int
    secret: tuple[int, int] | None = None  # character offsets of the secret in its line


@dataclass(slots=True)
class _Lines:
    """Line numbers of offsets in a text whose lines end at ``\\r\\n``, ``\\r`` or ``\\n``."""

    text: str
    starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.starts = [0, *(m.end() for m in re.finditer(r"\r\n|\r|\n", self.text))]

    def locate(self, offset: int) -> tuple[int, int]:
        """``(line number, offset within the line)``."""
        index = bisect.bisect_right(self.starts, offset) - 1
        return index + 1, offset - self.starts[index]


def _regex_hits(rule: Rule, pattern: re.Pattern[str], text: str, lines: _Lines) -> Iterator[_Hit]:
    for match in pattern.finditer(text):
        number, column = lines.locate(match.start())
        if "secret" not in pattern.groupindex:
            yield _Hit(rule.id, number)
            continue
        if is_placeholder(match["secret"]):
            continue
        start = column + match.start("secret") - match.start()
        yield _Hit(rule.id, number, (start, start + len(match["secret"])))


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _aliases(tree: ast.AST) -> dict[str, str]:
    """What each imported name stands for: ``sp`` → ``subprocess``, ``loads`` → ``pickle.loads``."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dangerous_call(node: ast.Call, name: str) -> str | None:
    for rule_id, names in _CALLS.items():
        if name not in names:
            continue
        if rule_id == "python-subprocess-shell" and not name.endswith("output"):
            shell = next((k.value for k in node.keywords if k.arg == "shell"), None)
            if not (isinstance(shell, ast.Constant) and shell.value):
                return None
        if rule_id == "python-yaml-load" and "unsafe" not in name:
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            if loader is not None and isinstance(loader, ast.Name | ast.Attribute):
                loader_name = loader.id if isinstance(loader, ast.Name) else loader.attr
                if loader_name in _SAFE_YAML_LOADERS:
                    return None
        return rule_id
    return None


def _assigned_literals(node: ast.AST) -> Iterator[tuple[str, ast.expr]]:
    """``(name, value)`` pairs where a name is given a value in code."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield _target_name(target), node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        yield _target_name(node.target), node.value
    elif isinstance(node, ast.Call):
        for keyword in node.keywords:
            if keyword.arg:
                yield keyword.arg, keyword.value
    elif isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                yield key.value, value
    elif isinstance(node, ast.arguments):
        positional = [*node.posonlyargs, *node.args]
        for argument, default in zip(
            positional[len(positional) - len(node.defaults) :], node.defaults, strict=True
        ):
            yield argument.arg, default
        for argument, default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
            if default is not None:
                yield argument.arg, default
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        yield _target_name(node.left), node.comparators[0]


def _target_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _literal_span(lines: list[str], node: ast.expr) -> tuple[int, int]:
    """Character offsets of a string literal's content in its first line (to mask it)."""
    line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
    raw = line.encode("utf-8", "surrogateescape")
    start = len(raw[: node.col_offset].decode("utf-8", "replace"))
    if node.end_lineno == node.lineno and node.end_col_offset is not None:
        end = len(raw[: node.end_col_offset].decode("utf-8", "replace"))
    else:
        end = len(line)
    segment = line[start:end]
    quote = re.search(r"(\"\"\"|'''|\"|')", segment)
    if quote is None:  # not where the tree says: mask from there to the end of the line
        return start, len(line)
    content_start = start + quote.end()
    closing = end - len(quote.group(1)) if segment.endswith(quote.group(1)) else end
    return content_start, max(content_start, closing)


def _python_hits(tree: ast.Module, lines: list[str]) -> Iterator[_Hit]:
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and (name := _qualified(node.func, aliases))
            and (rule_id := _dangerous_call(node, name))
        ):
            yield _Hit(rule_id, node.lineno)
        for name, value in _assigned_literals(node):
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                continue
            if _SECRET_NAME_AT_END.search(name) and not is_placeholder(value.value):
                yield _Hit("hardcoded-secret", value.lineno, _literal_span(lines, value))


def _mask(line: str, spans: Sequence[tuple[int, int]]) -> str:
    for start, end in sorted(spans, reverse=True):
        keep = min(end, start + 4)
        line = line[:keep] + "*" * (end - keep) + line[end:]
    return line


def is_python(path: str, text: str) -> bool:
    """A Python file: by its suffix, or by a ``python`` shebang."""
    if path.endswith(_PYTHON_SUFFIXES):
        return True
    return text.startswith("#!") and "python" in text.split("\n", 1)[0]


def scan_source(path: str, text: str) -> tuple[list[dict[str, Any]], bool]:
    """The findings in one file's text, and whether it was Python that did not parse."""
    python = is_python(path, text)
    tree = None
    if python:
        try:
            tree = ast.parse(text, filename=path)
        except (SyntaxError, ValueError, RecursionError):
            tree = None
    name = os.path.basename(path)
    config = name.startswith(".env") or name.endswith(_CONFIG_SUFFIXES)
    lines = _Lines(text)
    hits: list[_Hit] = []
    for rule in RULES:
        if rule.files == "python" and not python:
            continue
        if rule.ast and tree is not None:
            continue  # the syntax tree below
        hits.extend(_regex_hits(rule, rule.pattern, text, lines))
        if rule.config_pattern is not None and config:
            hits.extend(_regex_hits(rule, rule.config_pattern, text, lines))
    source_lines = re.split(r"\r\n|\r|\n", text)
    if tree is not None:
        hits.extend(_python_hits(tree, source_lines))
    secrets: dict[int, list[tuple[int, int]]] = {}
    for hit in hits:
        if hit.secret is not None:
            secrets.setdefault(hit.line, []).append(hit.secret)
    # The generic rule gives way to a specific one on the same line (a GitHub token
    # assigned to GITHUB_TOKEN is one finding, a github-token).
    seen = {
        (hit.line, "hardcoded-secret")
        for hit in hits
        if hit.secret is not None and hit.rule != "hardcoded-secret"
    }
    findings = []
    for hit in sorted(hits, key=lambda hit: (hit.line, hit.rule)):
        if (hit.line, hit.rule) in seen:
            continue
        seen.add((hit.line, hit.rule))
        rule = _RULES_BY_ID[hit.rule]
        line = source_lines[hit.line - 1] if hit.line <= len(source_lines) else ""
        snippet = _mask(line, secrets.get(hit.line, ())).strip()[:_SNIPPET_CHARS]
        findings.append(
            {
                "path": path,
                "line": hit.line,
                "rule": rule.id,
                "severity": rule.severity,
                "message": rule.message,
                "snippet": snippet,
            }
        )
    return findings, python and tree is None


# -- files, in a thread -------------------------------------------------------------------


@dataclass(slots=True)
class _Scanned:
    path: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    unparsed: bool = False
    skipped: str | None = None
    error: str | None = None
    recorded: bool = False


def _failed_scan(path: str, error: str) -> _Scanned:
    return _Scanned(path, error=error, recorded=True)


def _scan_batch(base: Path, paths: Sequence[str]) -> list[_Scanned]:
    results, directory = [], os.fspath(base)
    for path in paths:
        try:
            data = read_capped(os.path.join(directory, path))
        except OSError as error:
            results.append(
                _Scanned(path, error=f"{type(error).__name__}: {error.strerror or error}")
            )
            continue
        if data is None:
            results.append(_Scanned(path, skipped=f"larger than {MAX_FILE_BYTES} bytes"))
        elif b"\x00" in data[:_BINARY_PROBE]:
            results.append(_Scanned(path, skipped="binary"))
        else:
            findings, unparsed = scan_source(path, data.decode("utf-8", errors="replace"))
            results.append(_Scanned(path, findings, unparsed))
    return results


# -- the operation ---------------------------------------------------------------------------


def _order(finding: dict[str, Any]) -> tuple[int, str, int, str]:
    return (_SEVERITY_RANK[finding["severity"]], finding["path"], finding["line"], finding["rule"])


def _empty_state() -> dict[str, Any]:
    return {
        "after": None,
        "findings": [],
        "summary": {
            "files_scanned": 0,
            "python_unparsed": 0,
            "skipped": 0,
            "skipped_files": [],
            "failed": 0,
            "findings": 0,
            "by_severity": dict.fromkeys(SEVERITIES, 0),
            "by_rule": {},
        },
    }


def _add(state: dict[str, Any], results: Sequence[_Scanned]) -> dict[str, Any]:
    """A new state with ``results`` counted (``state`` itself is left as it was)."""
    summary = {**state["summary"]}
    summary["by_severity"] = dict(summary["by_severity"])
    summary["by_rule"] = dict(summary["by_rule"])
    summary["skipped_files"] = list(summary["skipped_files"])
    found = []
    for result in results:
        if result.skipped is not None:
            summary["skipped"] += 1
            if len(summary["skipped_files"]) < _SKIPPED_KEPT:
                summary["skipped_files"].append({"path": result.path, "reason": result.skipped})
        elif result.error is not None:
            summary["failed"] += 1
        else:
            summary["files_scanned"] += 1
            summary["python_unparsed"] += result.unparsed
        for finding in result.findings:
            summary["findings"] += 1
            summary["by_severity"][finding["severity"]] += 1
            summary["by_rule"][finding["rule"]] = summary["by_rule"].get(finding["rule"], 0) + 1
            found.append(finding)
    findings = sorted([*state["findings"], *found], key=_order)[:RESULT_FINDINGS]
    return {"after": results[-1].path, "findings": findings, "summary": summary}


@operation_type("security_scan", params=ScanParams)
async def security_scan(ctx: OperationContext, params: ScanParams) -> dict[str, Any]:
    """Scan the files under ``path`` for hard-coded secrets and dangerous Python calls."""
    ctx.progress(step="listing files")
    base, files, unreadable = await list_files(ctx, params.path)
    state: dict[str, Any] = ctx.resume_state or _empty_state()
    start = 0 if state["after"] is None else bisect.bisect_right(files, state["after"])
    ctx.progress(total=len(files), processed=start, step="scanning")
    if ctx.resume_state is None and unreadable:
        state["summary"]["failed"] += len(unreadable)
        for path in unreadable:
            ctx.fail_item(path, "the file name is not UTF-8")
    index = start
    while index < len(files):
        batch = files[index : index + _BATCH_FILES]
        results = await batch_or_one_by_one(ctx, base, batch, _scan_batch, _failed_scan)
        new_state = _add(state, results)
        for result in results:
            if result.error is not None and not result.recorded:
                ctx.fail_item(result.path, result.error)
        index += len(results)
        state = new_state
        await ctx.checkpoint(state, processed_items=index)
    summary = state["summary"]
    return {
        "path": params.path,
        "summary": summary,
        "findings": state["findings"],
        "findings_omitted": summary["findings"] - len(state["findings"]),
    }
