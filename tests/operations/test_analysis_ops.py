"""code_analysis, dependency_analysis and semantic_analysis on small real trees."""

from __future__ import annotations

import json
import pathlib

import pytest

from autobot import Settings, ValidationFailed
from autobot.operations import OperationStatus, run_operation
from autobot.storage import Store
from tests.operations.conftest import interrupted, write_tree


@pytest.fixture
def settings(tmp_path: pathlib.Path) -> Settings:
    return Settings(data_dir=tmp_path)


# -- code_analysis -----------------------------------------------------------------------

BRANCHY = """\
    def branchy(items, flag):
        total = 0
        for item in items:
            if item > 0 and flag:
                total += item
            elif item < 0:
                total -= item
        try:
            pass
        except ValueError:
            pass
        with open("x") as handle:
            pass
        assert total >= 0
        values = [x for x in items if x if x > 1]
        return total if flag else -total


    class Shape:
        def area(self, kind):
            match kind:
                case "square":
                    return 1
                case _:
                    return 0


    def outer():
        def inner(x):
            while x:
                x -= 1
        return inner


    def nested(a):
        if a:
            for b in a:
                while b:
                    with b:
                        if b:
                            return b
"""


def long_function(lines: int) -> str:
    body = "".join(f"    x{n} = {n}\n" for n in range(lines - 2))
    return f"def long_one():\n{body}    return 0\n"


async def test_code_analysis_measures_complexity_length_and_nesting(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    write_tree(
        tmp_path / "files" / "project",
        {
            "pkg/__init__.py": "",
            "pkg/shapes.py": BRANCHY,
            "pkg/long.py": long_function(60),
            "pkg/broken.py": "def oops(:\n    pass\n",
            "notes.txt": "def not_python(: nothing to see\n",
        },
    )
    run = await run_operation("code_analysis", {"path": "project"}, settings=settings, store=store)
    assert run.outcome.status == OperationStatus.COMPLETED
    result = run.outcome.result
    assert result["files_analysed"] == 3  # __init__, shapes, long; notes.txt is no match
    assert result["files_failed"] == 1
    assert result["failures"] == [
        {"item": "pkg/broken.py", "error": "syntax error at line 1: invalid syntax"}
    ]
    measured = {row["name"]: row for row in result["most_complex"]}
    # 1 + for + if + and + elif + except + with + assert + two comprehension ifs + ternary
    assert measured["branchy"]["complexity"] == 11
    assert measured["branchy"]["nesting_depth"] == 2  # the elif is no deeper than its if
    assert measured["branchy"]["line"] == 1 and measured["branchy"]["lines"] == 16
    assert measured["Shape.area"]["complexity"] == 3  # 1 + two cases
    assert measured["outer"]["complexity"] == 1  # the inner loop is inner's, not outer's
    assert measured["outer.inner"]["complexity"] == 2
    assert measured["nested"]["complexity"] == 6 and measured["nested"]["nesting_depth"] == 5
    assert result["most_complex"][0]["name"] == "branchy"
    assert result["functions"] == 6 and result["methods"] == 1
    assert result["long_functions"]["count"] == 1
    assert result["long_functions"]["longest"][0]["name"] == "long_one"
    assert result["long_functions"]["longest"][0]["lines"] == 60
    assert [row["name"] for row in result["deep_nesting"]["deepest"]] == ["nested"]
    total = 11 + 3 + 1 + 2 + 6 + 1
    assert result["averages"]["complexity_per_function"] == round(total / 6, 2)
    assert result["most_complex_files"][0]["path"] == "pkg/shapes.py"
    json.dumps(result)


async def test_code_analysis_of_one_file_and_refusals(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    write_tree(tmp_path / "files", {"solo.py": BRANCHY})
    run = await run_operation("code_analysis", {"path": "solo.py"}, settings=settings, store=store)
    assert run.outcome.result["files_analysed"] == 1
    assert run.outcome.result["functions"] == 5
    outside = await run_operation("code_analysis", {"path": "../x"}, settings=settings, store=store)
    assert outside.outcome.status == OperationStatus.FAILED
    assert outside.outcome.error["code"] == "path_outside_root"
    missing = await run_operation("code_analysis", {"path": "nope"}, settings=settings, store=store)
    assert missing.outcome.error["code"] == "file_not_found"
    for bad in ({"path": "x", "extra": 1}, {"path": ""}, {"path": "x", "patterns": ["/abs"]}):
        with pytest.raises(ValidationFailed):
            await run_operation("code_analysis", bad, settings=settings, store=store)


async def test_a_resumed_code_analysis_does_not_read_a_finished_file_again(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    root = tmp_path / "files" / "src"
    write_tree(root, {f"m{n}.py": f"def f{n}(a):\n    return a or {n}\n" for n in range(6)})
    checkpoint = await interrupted("code_analysis", {"path": "src"}, settings, store, after=3)
    assert checkpoint["state"]["after"] == "m2.py"
    # A finished file broken now would fail if it were read again; an unfinished one counts.
    (root / "m0.py").write_text("def broken(:\n")
    (root / "m5.py").write_text("def f5(a):\n    return a and a or 5\n")
    run = await run_operation(
        "code_analysis", {"path": "src"}, settings=settings, store=store, checkpoint=checkpoint
    )
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    assert result["files_analysed"] == 6 and result["files_failed"] == 0
    complexity = {row["name"]: row["complexity"] for row in result["most_complex"]}
    assert complexity["f0"] == 2 and complexity["f5"] == 3
    assert run.context.processed_items == run.context.total_items == 6


# -- dependency_analysis -----------------------------------------------------------------------


async def test_dependency_analysis_finds_undeclared_and_unused_dependencies(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    write_tree(
        tmp_path / "files" / "project",
        {
            "requirements.txt": """\
                # runtime
                requests>=2.31  # HTTP
                PyYAML==6.0
                -e .
                --index-url https://example.org/simple
                Unused_Lib[extra]; python_version > "3.8"
                """,
            "requirements-dev.txt": "pytest\n",
            "pyproject.toml": """\
                [project]
                name = "app"
                dependencies = ["Trio >= 0.25", "httpx"]
                [project.optional-dependencies]
                docs = ["sphinx"]
                """,
            "web/package.json": json.dumps(
                {"dependencies": {"left-pad": "1"}, "devDependencies": {"jest": "29"}}
            ),
            "src/app/__init__.py": "",
            "src/app/core.py": """\
                import os
                import requests
                import yaml
                import numpy as np
                from . import util
                from .util import helper
                """,
            "src/app/util.py": "import json\nimport trio\nfrom app.core import thing\n",
            "tests/test_app.py": "import pytest\nfrom app import util\nimport app.core\n",
            "tests/broken.py": "import (\n",
        },
    )
    run = await run_operation(
        "dependency_analysis", {"path": "project"}, settings=settings, store=store
    )
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    manifests = {manifest["path"]: manifest for manifest in result["manifests"]}
    assert manifests["requirements.txt"]["dependencies"] == ["PyYAML", "Unused_Lib", "requests"]
    assert manifests["pyproject.toml"]["dependencies"] == ["Trio", "httpx"]
    assert manifests["pyproject.toml"]["optional-dependencies"] == {"docs": ["sphinx"]}
    assert manifests["web/package.json"]["dependencies"] == ["left-pad"]
    assert manifests["web/package.json"]["devDependencies"] == ["jest"]
    third_party = {row["module"]: row["files"] for row in result["third_party_imports"]}
    assert third_party == {"requests": 1, "yaml": 1, "numpy": 1, "trio": 1, "pytest": 1}
    assert result["undeclared_imports"] == [{"module": "numpy", "files": 1}]
    unused = {row["name"]: row["manifests"] for row in result["unused_declarations"]}
    assert unused == {
        "Unused_Lib": ["requirements.txt"],
        "httpx": ["pyproject.toml"],
        "sphinx": ["pyproject.toml"],
    }
    assert result["stdlib_modules_imported"] == 2  # os, json
    internal = result["internal"]
    assert "app" in internal["top_level"]
    most = {row["module"]: row["importers"] for row in internal["most_imported"]}
    assert most == {"app.util": 2, "app.core": 2}
    assert result["python_files"] == 4 and result["files_failed"] == 1
    assert result["failures"][0]["item"] == "tests/broken.py"


# -- semantic_analysis -------------------------------------------------------------------------

TRIO_A = """\
# Cancellation in Trio

Trio cancels work through cancel scopes. A cancel scope has a deadline;
when the deadline passes, every task inside the scope is cancelled.

```python
pasta = "code blocks are not prose"
```
"""

TRIO_B = """\
Cancel scopes are how Trio cancels work: each scope carries a deadline,
and a task inside a cancelled scope is cancelled at its next checkpoint.
"""

PASTA = "The pasta is boiled in salted water. Pasta needs salt."

CODE = '''\
"""Deadlines and cancel scopes for tasks."""

pasta_variable = "identifiers are not words"


def wait():
    """Wait until the deadline."""
'''


async def test_semantic_analysis_counts_words_and_pairs_similar_files(
    tmp_path: pathlib.Path, settings: Settings, store: Store
) -> None:
    write_tree(
        tmp_path / "files" / "docs",
        {"a.md": TRIO_A, "b.txt": TRIO_B, "cooking/pasta.txt": PASTA, "code.py": CODE},
    )
    run = await run_operation("semantic_analysis", {"path": "docs"}, settings=settings, store=store)
    result = run.outcome.result
    assert run.outcome.status == OperationStatus.COMPLETED
    assert result["files_analysed"] == 4
    files = {entry["path"]: entry for entry in result["files"]}
    assert files["cooking/pasta.txt"]["words"] == 10
    assert files["cooking/pasta.txt"]["distinct_words"] == 9
    assert files["cooking/pasta.txt"]["top_terms"][0] == "pasta"
    assert "the" not in files["cooking/pasta.txt"]["top_terms"]
    assert files["code.py"]["words"] == 10  # the two docstrings only
    assert "pasta" not in files["code.py"]["top_terms"] + files["a.md"]["top_terms"]
    top = {row["term"]: row for row in result["top_terms"]}
    assert top["scope"]["files"] == 2 and top["pasta"]["count"] == 2 and top["pasta"]["files"] == 1
    pairs = result["similar_pairs"]
    assert {pairs[0]["a"], pairs[0]["b"]} == {"a.md", "b.txt"}
    assert all("cooking/pasta.txt" not in (p["a"], p["b"]) for p in pairs)
    assert 0 < pairs[-1]["similarity"] <= pairs[0]["similarity"] <= 1
    assert result["similarity"]["files_compared"] == 4
    assert result["similarity"]["files_limit"] == 500
