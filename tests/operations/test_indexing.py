"""codebase_indexing on small real trees: counts, symbols, failures, and exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from autobot import Settings
from autobot.operations import OperationStatus, run_operation
from autobot.operations.builtin._indexing import BATCH_FILES, MAX_FILE_BYTES, index_source
from autobot.storage import Store
from tests.operations.conftest import interrupted

PYTHON = '''"""A module."""
import functools


def plain(x):
    def inner():
        return x
    return inner


@functools.cache
async def fetch(url):
    return url


class Thing:
    def method(self):
        return 1
'''  # 18 lines; plain at 5, fetch at 12 (the def line, not the decorator), Thing at 16

JAVASCRIPT = """export function add(a, b) {
  return a + b;
}

class Widget {
  render() {
    return null;
  }
}
export const double = (x) => x * 2;
"""  # 10 lines

GO = """package main

func Main() {
}

func (w *Widget) Draw() {
}

type Widget struct {
  size int
}
"""  # 11 lines

MARKDOWN = """# Title

Some text.

```sh
# not a heading
```

## Usage
"""  # 9 lines

EXPECTED_SYMBOLS = {
    "app.py": [("plain", "function", 5), ("fetch", "async_function", 12), ("Thing", "class", 16)],
    "web/widget.js": [("add", "function", 1), ("Widget", "class", 5), ("double", "function", 10)],
    "main.go": [("Main", "function", 3), ("Draw", "method", 6), ("Widget", "struct", 9)],
    "README.md": [("Title", "heading", 1), ("Usage", "heading", 9)],
}


def make_project(root: Path) -> None:
    (root / "web").mkdir(parents=True)
    (root / "node_modules").mkdir()
    (root / "app.py").write_text(PYTHON)
    (root / "web" / "widget.js").write_text(JAVASCRIPT)
    (root / "main.go").write_text(GO)
    (root / "README.md").write_text(MARKDOWN)
    (root / "broken.py").write_text("def broken(:\n    pass\n")
    (root / "notes.txt").write_text("not a source file\n")
    (root / "node_modules" / "dep.js").write_text("function dep() {}\n")
    (root / "huge.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))


async def index(settings: Settings, store: Store, **params: Any) -> dict[str, Any]:
    run = await run_operation("codebase_indexing", params, settings=settings, store=store)
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    assert run.outcome.result is not None
    return run.outcome.result


async def test_files_lines_and_symbols_are_counted(tmp_path: Path, store: Store) -> None:
    make_project(tmp_path / "files" / "project")
    settings = Settings(data_dir=tmp_path)
    result = await index(settings, store, path="project")

    summary = result["summary"]
    assert summary["files"] == 4
    assert summary["lines"] == 18 + 10 + 11 + 9
    assert summary["symbols"] == 11
    assert summary["languages"] == {
        "python": {"files": 1, "lines": 18},
        "javascript": {"files": 1, "lines": 10},
        "go": {"files": 1, "lines": 11},
        "markdown": {"files": 1, "lines": 9},
    }
    assert summary["largest"][0] == {"path": "app.py", "size": len(PYTHON)}
    assert summary["skipped"] == 1
    assert summary["skipped_files"][0]["path"] == "huge.json"
    assert summary["failed"] == 1
    assert result["failed_items"] == 1
    assert result["failures"][0]["item"] == "broken.py"
    assert "SyntaxError" in result["failures"][0]["error"]

    symbols = {
        entry["path"]: [(s["name"], s["kind"], s["line"]) for s in entry["symbols"]]
        for entry in result["entries"]
    }
    assert symbols == EXPECTED_SYMBOLS
    index_lines = (tmp_path / result["index_file"]).read_text().splitlines()
    assert [json.loads(line) for line in index_lines] == result["entries"]
    assert result["entries_omitted"] == 0
    assert not list((tmp_path / "operations").rglob("*.partial"))


async def test_patterns_choose_the_files(tmp_path: Path, store: Store) -> None:
    make_project(tmp_path / "files" / "project")
    settings = Settings(data_dir=tmp_path)
    only_python = await index(settings, store, path="project", patterns=["**/*.py"])
    assert only_python["summary"]["files"] == 1  # app.py; broken.py failed
    web = await index(settings, store, path="project", patterns=["web/*", "*.txt"])
    assert sorted(e["path"] for e in web["entries"]) == ["notes.txt", "web/widget.js"]
    assert web["entries"][0]["language"] == "other"
    one_file = await index(settings, store, path="project/main.go")
    assert [e["path"] for e in one_file["entries"]] == ["main.go"]


def test_rules_of_other_languages() -> None:
    rust = b"pub fn open() {}\nstruct Inner;\nimpl Inner {\n    fn hidden() {}\n}\n"
    c = b"#define LIMIT 4\nstatic int count(const char *s) {\n  return 0;\n}\nstruct node {\n"
    shell = b"build() {\n  make\n}\nfunction clean {\n  rm -r out\n}\n"

    def names(path: str, data: bytes) -> list[tuple[str, str]]:
        return [(s["name"], s["kind"]) for s in index_source(path, data)["symbols"]]

    assert names("lib.rs", rust) == [("open", "function"), ("Inner", "struct")]
    assert names("x.c", c) == [("LIMIT", "macro"), ("count", "function"), ("node", "struct")]
    assert names("run.sh", shell) == [("build", "function"), ("clean", "function")]
    assert index_source("empty.py", b"")["lines"] == 0
    assert index_source("no-newline.py", b"x = 1")["lines"] == 1


async def test_outside_and_missing_paths_are_refused(tmp_path: Path, store: Store) -> None:
    settings = Settings(data_dir=tmp_path)
    for path, code in (("../..", "path_outside_root"), ("nowhere", "file_not_found")):
        params = {"path": path}
        run = await run_operation("codebase_indexing", params, settings=settings, store=store)
        assert run.outcome.status is OperationStatus.FAILED
        assert run.outcome.error is not None and run.outcome.error["code"] == code


# -- resume -------------------------------------------------------------------------------


def make_many(root: Path, count: int) -> None:
    for number in range(count):
        directory = root / f"d{number % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{number:04d}.py").write_text(
            f"def f{number}():\n    return {number}\n\n\nclass C{number}:\n    pass\n"
        )


async def test_resume_after_a_cancel_redoes_no_finished_file(tmp_path: Path, store: Store) -> None:
    files = 2 * BATCH_FILES + 50
    make_many(tmp_path / "clean" / "files" / "tree", files)
    shutil.copytree(tmp_path / "clean" / "files", tmp_path / "stopped" / "files")
    clean_settings = Settings(data_dir=tmp_path / "clean")
    settings = Settings(data_dir=tmp_path / "stopped")
    clean = await index(clean_settings, store, path="tree")

    done = BATCH_FILES  # one batch
    checkpoint = await interrupted(
        "codebase_indexing", {"path": "tree"}, settings, store, after=done
    )
    partial = tmp_path / "stopped" / "operations" / "local" / "index.jsonl.partial"
    assert partial.stat().st_size >= checkpoint["state"]["offset"] > 0
    # Every file changes now: an entry of the old content shows a file that was not redone.
    for path in sorted((tmp_path / "stopped" / "files" / "tree").rglob("*.py")):
        path.write_text(path.read_text() + "# touched\n")

    run = await run_operation(
        "codebase_indexing", {"path": "tree"}, settings=settings, store=store, checkpoint=checkpoint
    )
    assert run.outcome.status is OperationStatus.COMPLETED
    assert run.context.resumed_items == done
    result = run.outcome.result
    assert result is not None
    entries = [json.loads(line) for line in (settings.data_dir / result["index_file"]).open()]
    paths = [entry["path"] for entry in entries]
    assert len(paths) == len(set(paths)) == files
    assert paths == [entry["path"] for entry in clean["entries"]]
    untouched = [entry["lines"] == 6 for entry in entries]
    assert untouched == [True] * done + [False] * (files - done)
    assert result["summary"]["lines"] == clean["summary"]["lines"] + (files - done)


async def test_a_resumed_index_equals_a_clean_one(tmp_path: Path, store: Store) -> None:
    make_many(tmp_path / "clean" / "files" / "tree", 2 * BATCH_FILES + 50)
    (tmp_path / "clean" / "files" / "tree" / "d3" / "bad.py").write_text("def (\n")
    shutil.copytree(tmp_path / "clean" / "files", tmp_path / "stopped" / "files")
    clean_settings = Settings(data_dir=tmp_path / "clean")
    settings = Settings(data_dir=tmp_path / "stopped")
    clean = await index(clean_settings, store, path="tree")

    after = 2 * BATCH_FILES
    checkpoint = await interrupted(
        "codebase_indexing", {"path": "tree"}, settings, store, after=after
    )
    run = await run_operation(
        "codebase_indexing", {"path": "tree"}, settings=settings, store=store, checkpoint=checkpoint
    )
    resumed = run.outcome.result
    assert resumed is not None
    assert resumed["summary"] == clean["summary"]
    assert resumed["entries"] == clean["entries"]
    assert resumed["failed_items"] == clean["failed_items"] == 1
    clean_index = (clean_settings.data_dir / clean["index_file"]).read_bytes()
    assert (settings.data_dir / resumed["index_file"]).read_bytes() == clean_index
