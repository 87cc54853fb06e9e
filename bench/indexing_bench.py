"""Codebase indexing: files per second beside a plain walk-and-read loop.

Generates a tree of small source files (by default 20,000 in 500 directories:
Python modules with a few functions and classes, and JavaScript, TypeScript,
Go, Rust, shell, Markdown and JSON files), then measures in one process:

* **plain**: ``os.walk`` + ``open().read()`` + counting lines, synchronous,
  no parsing: the floor of reading the tree;
* **indexing**: ``codebase_indexing`` through ``run_operation`` on an embedded
  store, all of it: the walk, the batches in ``file.io`` threads, symbols (the
  Python files parsed with ``ast``), checkpoints, the index file;
* **same work, sync**: the indexer's per-file function (``index_source``) on
  each file in a plain loop: what indexing costs without Trio, threads,
  checkpoints or the index file;
* **ast.parse alone**: parsing the Python files, nothing else.

Each is the best of ``--repeat`` runs taken in turn, after one warm-up read of
the tree; "vs plain" is plain's time over the measure's (100 %: as fast).

    .venv/bin/python bench/indexing_bench.py [--files 20000] [--dirs 500] [--batch 64,128]
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobot import Settings
from autobot.operations import OperationStatus, run_operation
from autobot.operations.builtin import _indexing
from autobot.storage import open_embedded_store

PYTHON = '''"""Module {n}: helpers for the {n}th thing."""

import os
from dataclasses import dataclass


def load_{n}(path):
    """Read the thing at ``path``."""
    with open(path) as handle:
        return handle.read()


async def fetch_{n}(client, key):
    reply = await client.get(key)
    if reply is None:
        return None
    return reply.decode()


@dataclass
class Record{n}:
    name: str
    size: int = 0

    def grow(self, by):
        self.size += by
        return self.size


class Store{n}:
    def __init__(self):
        self.records = {{}}

    def put(self, record):
        self.records[record.name] = record
'''

OTHERS = {
    ".js": "export function add{n}(a, b) {{\n  return a + b;\n}}\n\nexport class View{n} {{\n"
    "  render() {{\n    return null;\n  }}\n}}\nconst twice{n} = (x) => x * 2;\n",
    ".ts": "export interface Shape{n} {{\n  area(): number;\n}}\n\nexport type Id{n} = string;\n\n"
    "export function make{n}(id: Id{n}): Shape{n} {{\n  return {{ area: () => 1 }};\n}}\n",
    ".go": "package p{n}\n\nfunc Run{n}(x int) int {{\n\treturn x + 1\n}}\n\n"
    "type Box{n} struct {{\n\tSize int\n}}\n",
    ".rs": "pub fn run_{n}(x: u32) -> u32 {{\n    x + 1\n}}\n\npub struct Boxed{n} {{\n"
    "    size: u32,\n}}\n",
    ".sh": "#!/bin/sh\nbuild_{n}() {{\n  make all\n}}\n\nbuild_{n}\n",
    ".md": "# Component {n}\n\nWhat it does.\n\n## Usage\n\n```sh\n# run it\nmake\n```\n",
    ".json": '{{"name": "pkg{n}", "version": "1.0.{n}", "private": true}}\n',
}
# Of every 40 files in a directory: 16 Python, 6 JS, 4 TS, 4 Go, 3 Rust, 3 Markdown, 2 JSON, 2 sh.
MIX = [".py"] * 16 + [".js"] * 6 + [".ts", ".go"] * 4 + [".rs", ".md"] * 3 + [".json", ".sh"] * 2


def make_tree(root: Path, files: int, dirs: int) -> None:
    for number in range(files):
        directory = root / f"pkg{number % dirs // 25}" / f"mod{number % dirs}"
        directory.mkdir(parents=True, exist_ok=True)
        suffix = MIX[number // dirs % len(MIX)]
        template = PYTHON if suffix == ".py" else OTHERS[suffix]
        (directory / f"f{number}{suffix}").write_text(template.format(n=number))


def plain_loop(root: Path) -> tuple[int, int]:
    files = lines = 0
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                lines += f.read().count("\n")
            files += 1
    return files, lines


def same_work_sync(root: Path) -> tuple[int, int]:
    files = lines = 0
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                entry = _indexing.index_source(os.path.relpath(path, root), f.read())
            lines += entry["lines"]
            files += 1
    return files, lines


def parse_alone(sources: list[bytes]) -> tuple[int, int]:
    for source in sources:
        ast.parse(source)
    return len(sources), 0


def indexing(data_dir: Path) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        shutil.rmtree(data_dir / "operations", ignore_errors=True)
        async with open_embedded_store(data_dir / "store") as store:
            run = await run_operation(
                "codebase_indexing",
                {"path": "tree"},
                settings=Settings(data_dir=data_dir),
                store=store,
            )
        assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
        assert run.outcome.result is not None
        summary = run.outcome.result["summary"]
        return summary["files"], summary["lines"]

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--dirs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--batch", default=str(_indexing.BATCH_FILES), help="files per batch, comma-separated"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        data_dir = Path(work)
        root = data_dir / "files" / "tree"
        make_tree(root, args.files, args.dirs)
        plain_loop(root)  # warm the page cache
        python_sources = [path.read_bytes() for path in root.rglob("*.py")]
        batches = [int(size) for size in args.batch.split(",")]

        def index_with(batch: int) -> Callable[[], tuple[int, int]]:
            def run() -> tuple[int, int]:
                _indexing.BATCH_FILES = batch
                return indexing(data_dir)

            return run

        measures: dict[str, Callable[[], tuple[int, int]]] = {
            "plain walk + read + count lines": lambda: plain_loop(root),
            "same work as indexing, sync": lambda: same_work_sync(root),
            "ast.parse of the Python files": lambda: parse_alone(python_sources),
            **{f"codebase_indexing, batch {batch}": index_with(batch) for batch in batches},
        }
        seconds = dict.fromkeys(measures, float("inf"))
        counts = dict.fromkeys(measures, 0)
        for _ in range(args.repeat):  # round robin, so a noisy moment hurts each alike
            for name, measure in measures.items():
                started = time.perf_counter()
                counts[name], _ = measure()
                seconds[name] = min(seconds[name], time.perf_counter() - started)

        print(
            f"{args.files} files in {args.dirs} directories ({len(python_sources)} Python), "
            f"best of {args.repeat}"
        )
        plain_s = seconds["plain walk + read + count lines"]
        sync_s = seconds["same work as indexing, sync"]
        print(f"{'measure':<34}{'seconds':>9}{'files/s':>10}{'vs plain':>10}{'vs sync':>9}")
        for name, taken in seconds.items():
            versus_sync = f"{sync_s / taken:>9.0%}" if name.startswith("codebase") else ""
            print(
                f"{name:<34}{taken:>9.3f}{counts[name] / taken:>10.0f}"
                f"{plain_s / taken:>10.0%}{versus_sync}"
            )
            if name.startswith("codebase"):
                assert counts[name] == counts["plain walk + read + count lines"]


if __name__ == "__main__":
    main()
