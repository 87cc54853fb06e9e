"""What the types that work on the files of a tree share.

Their parameters take glob ``patterns`` of one shape (:data:`GlobPatterns`),
and they read files in batches, one ``file.io`` step each: when a batch's
step fails or expires as a whole, :func:`batch_or_one_by_one` runs the
batch again with one item per file, so the one file that broke it is the one
failed item and the others are done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field, StringConstraints

from ...files import compile_patterns, run_file_io
from .._context import OperationContext

__all__ = ["GlobPatterns", "batch_or_one_by_one"]

R = TypeVar("R")


def _relative_globs(patterns: list[str]) -> list[str]:
    compile_patterns(patterns)  # ValueError, hence 422, naming one that is not a relative glob
    return patterns


#: 1 to 50 relative glob patterns of 1 to 256 characters (see ``autobot.files.walk_files``).
GlobPatterns = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=256)]],
    Field(min_length=1, max_length=50),
    AfterValidator(_relative_globs),
]


async def batch_or_one_by_one(
    ctx: OperationContext,
    base: Path,
    paths: Sequence[str],
    read_batch: Callable[[Path, Sequence[str]], list[R]],
    failed: Callable[[str, str], R],
) -> list[R]:
    """``read_batch(base, paths)`` in one ``file.io`` step, or file by file if that fails.

    File by file, each file is an item of its own (``ctx.item``); one that
    fails gives ``failed(path, error)`` in its place, and is already counted
    among the operation's failed items.
    """
    try:
        return await run_file_io(read_batch, base, paths)
    except Exception:  # the step expired or broke: one item per file tells which
        results = []
        for path in paths:
            async with ctx.item(path) as outcome:
                [result] = await run_file_io(read_batch, base, [path])
            results.append(result if outcome.ok else failed(path, outcome.error or "failed"))
        return results
