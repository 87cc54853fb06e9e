"""``kb_population``: text and Markdown files split into facts of the knowledge base.

**Splitting** (:func:`split_document`, no I/O). Markdown is cut into sections
at its headings (``#`` lines and underlined ones, none inside code fences; a
YAML front matter block is dropped), reStructuredText at its underlined
titles, plain text has no sections. A section is cut into paragraphs at blank
lines (a fenced code block stays one paragraph), and consecutive paragraphs
of a section are packed into chunks of at most :data:`CHUNK_CHARS`
characters; a longer paragraph is cut at sentence ends, a longer sentence at
white space, and a longer word anywhere. No chunk is empty or only white
space.

**Facts.** Each chunk is one fact: the chunk's text, and metadata ``source``
(the path relative to the directory given), ``heading`` (the section's
heading, when it has one) and ``chunk`` (its number within the file, from
0). Fact text never exceeds the contract's 65,536 characters; a heading or
source that would take the metadata over 4 KiB is shortened with ``…``.
:func:`add_fact` is the one place a fact is added, so another way of adding
(a knowledge-base service with its own index) replaces one function.

A file whose facts could not all be added (the store failed) is a failed
item; the facts added before the failure stay.

**Resume.** The state names the file being added and how many of its facts
are in; it is checkpointed after every fact and saved at once (the type is
``checkpoint_every_item``), so a resume, after a cancel or after the process
died, starts at the next fact and adds none twice. The price is one
checkpoint write per fact. A store finishes a write it has begun even when
the caller is cancelled (the embedded store has queued it for its writer by
then), so a fact's write is shielded from the operation's cancellation,
bounded by the store's own deadlines (``file.io``, ``redis.command``): a
cancel waits for the one fact in flight (milliseconds), and the checkpoint
after it is exact. Only a write that outlives those deadlines leaves it
unknown whether its fact is in.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field

from ...files import run_file_io
from ...storage import Store
from .._context import OperationContext
from .._registry import operation_type
from ._indexing import MAX_FILE_BYTES, list_files, read_capped
from ._tree import GlobPatterns

__all__ = [
    "CHUNK_CHARS",
    "DEFAULT_PATTERNS",
    "KbParams",
    "add_fact",
    "fact_metadata",
    "kb_population",
    "split_document",
]

#: The longest chunk, in characters.
CHUNK_CHARS = 1500
#: The contract's limits on a fact: text characters, and metadata bytes as JSON.
FACT_TEXT_MAX = 65_536
METADATA_MAX_BYTES = 4096
DEFAULT_PATTERNS: tuple[str, ...] = ("**/*.md", "**/*.txt", "**/*.rst")
#: Files listed in the result; the rest are only counted.
RESULT_FILES = 1000
_BATCH_FILES = 32
# Bytes of files one batch may read before it ends early.
_BATCH_BYTES = 8 * 1024 * 1024
_HEADING_CHARS = 300

_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_MARKDOWN_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_RST_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
# A sentence ends at a full stop, question or exclamation mark (closing quotes and
# brackets included) followed by white space.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"')\]»”’]*(\s+)")


class KbParams(BaseModel):
    """``path`` (a directory or file under the files root) and the glob ``patterns``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(max_length=4096)
    patterns: GlobPatterns = Field(default_factory=lambda: list(DEFAULT_PATTERNS))


# -- splitting, without I/O --------------------------------------------------------------


@dataclass(slots=True)
class Section:
    """A heading (``None`` before the first one) and its paragraphs."""

    heading: str | None
    paragraphs: list[str] = field(default_factory=list)


def _markdown_sections(lines: list[str]) -> list[Section]:
    sections = [Section(None)]
    paragraph: list[str] = []
    fence = ""

    def end_paragraph() -> None:
        if text := "\n".join(paragraph).strip():
            sections[-1].paragraphs.append(text)
        paragraph.clear()

    if lines and lines[0].strip() == "---":  # YAML front matter
        for end in range(1, len(lines)):
            if lines[end].strip() in ("---", "..."):
                lines = lines[end + 1 :]
                break
    for line in lines:
        opened = _FENCE.match(line)
        if fence:
            paragraph.append(line)
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
                end_paragraph()
        elif opened:
            end_paragraph()
            fence = opened.group(1)
            paragraph.append(line)
        elif heading := _ATX.match(line):
            end_paragraph()
            sections.append(Section((heading.group(1) or "").strip() or None))
        elif paragraph and _MARKDOWN_UNDERLINE.match(line):
            title = " ".join(part.strip() for part in paragraph)
            paragraph.clear()
            sections.append(Section(title))
        elif _THEMATIC_BREAK.match(line) or not line.strip():
            end_paragraph()
        else:
            paragraph.append(line)
    end_paragraph()
    return sections


def _text_sections(lines: list[str], *, titles: bool) -> list[Section]:
    """Paragraphs at blank lines; with ``titles``, reStructuredText's underlined titles."""
    sections = [Section(None)]
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if text := "\n".join(paragraph).strip():
            sections[-1].paragraphs.append(text)
        paragraph.clear()

    for line in lines:
        if not line.strip():
            end_paragraph()
        elif (
            titles
            and len(paragraph) == 1
            and _RST_ADORNMENT.match(line)
            and len(line.rstrip()) >= len(paragraph[0].strip())
        ):
            sections.append(Section(paragraph[0].strip()))
            paragraph.clear()
        elif titles and not paragraph and _RST_ADORNMENT.match(line):
            continue  # an overline: its title and underline follow
        else:
            paragraph.append(line)
    end_paragraph()
    return sections


def _sentences(text: str) -> list[str]:
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        sentences.append(text[start : end.start(1)])
        start = end.end()
    sentences.append(text[start:])
    return [sentence for sentence in sentences if sentence.strip()]


def _pieces(text: str, limit: int) -> list[str]:
    """``text`` cut at sentence ends, then white space, then anywhere, into parts ≤ ``limit``."""
    if len(text) <= limit:
        return [text]
    for cut in (_sentences, str.split):
        pieces = cut(text)
        if len(pieces) > 1:
            return [part for piece in _pack(pieces, limit, " ") for part in _pieces(piece, limit)]
    return [text[start : start + limit] for start in range(0, len(text), limit)]


def _pack(pieces: Sequence[str], limit: int, joiner: str) -> list[str]:
    """Consecutive pieces joined while the whole stays ≤ ``limit`` (a longer one stays alone)."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(joiner) + len(piece) <= limit:
            current += joiner + piece
        else:
            if current:
                chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def split_document(path: str, text: str, limit: int = CHUNK_CHARS) -> list[tuple[str | None, str]]:
    """``(heading, chunk)`` pairs of one file, in order; Markdown, reStructuredText or text."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".md", ".markdown"):
        sections = _markdown_sections(lines)
    else:
        sections = _text_sections(lines, titles=suffix == ".rst")
    chunks = []
    for section in sections:
        paragraphs = [piece for p in section.paragraphs for piece in _pieces(p, limit)]
        for chunk in _pack(paragraphs, limit, "\n\n"):
            if chunk := chunk.strip():
                chunks.append((section.heading, chunk[:FACT_TEXT_MAX]))
    return chunks


def _json_size(value: Any) -> int:
    return len(json.dumps(value).encode())


def fact_metadata(source: str, heading: str | None, chunk: int) -> dict[str, Any]:
    """The metadata of one fact, within :data:`METADATA_MAX_BYTES` as JSON."""
    metadata: dict[str, Any] = {"source": source, "chunk": chunk}
    if heading:
        metadata["heading"] = heading[:_HEADING_CHARS]
    # ASCII-escaped JSON is the longest way to count it: within it, within any.
    for key in ("heading", "source"):
        while len(metadata.get(key, "")) > 1 and _json_size(metadata) > METADATA_MAX_BYTES:
            value = metadata[key]
            metadata[key] = value[: max(0, len(value) - len(value) // 4 - 8)] + "…"
    return metadata


# -- files, in a thread -------------------------------------------------------------------


@dataclass(slots=True)
class _Document:
    path: str
    chunks: list[tuple[str | None, str]] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None


def _split_batch(base: Path, paths: Sequence[str]) -> list[_Document]:
    documents, budget, directory = [], _BATCH_BYTES, os.fspath(base)
    for path in paths:
        if budget <= 0:
            break
        try:
            data = read_capped(os.path.join(directory, path))
        except OSError as error:
            reason = error.strerror or str(error)
            documents.append(_Document(path, error=f"{type(error).__name__}: {reason}"))
            continue
        if data is None:
            documents.append(_Document(path, skipped=f"larger than {MAX_FILE_BYTES} bytes"))
            continue
        budget -= len(data)
        documents.append(_Document(path, split_document(path, data.decode("utf-8", "replace"))))
    return documents


# -- the operation ---------------------------------------------------------------------------


async def add_fact(store: Store, text: str, metadata: dict[str, Any]) -> None:
    """Add one fact to the knowledge base (the one place the operation adds one)."""
    await store.put_fact(text, metadata)


def _empty_state() -> dict[str, Any]:
    return {
        "after": None,  # the last file whose facts are all in
        "current": None,  # the file being added, and how many of its facts are in
        "added": 0,
        "facts": 0,
        "files": 0,
        "files_listed": [],
        "skipped": 0,
        "failed": 0,
    }


def _file_done(state: dict[str, Any], path: str, facts: int, **counts: int) -> dict[str, Any]:
    listed = state["files_listed"]
    if len(listed) < RESULT_FILES:
        listed = [*listed, {"path": path, "facts": facts}]
    done = {**state, "after": path, "current": None, "added": 0, "files_listed": listed}
    for key, value in counts.items():
        done[key] += value
    return done


@operation_type("kb_population", params=KbParams, checkpoint_every_item=True)
async def kb_population(ctx: OperationContext, params: KbParams) -> dict[str, Any]:
    """Split text and Markdown files under ``path`` into facts of the knowledge base."""
    ctx.progress(step="listing files")
    base, files, unreadable = await list_files(ctx, params.path, params.patterns)
    state: dict[str, Any] = ctx.resume_state or _empty_state()
    start = 0 if state["after"] is None else bisect.bisect_right(files, state["after"])
    ctx.progress(total=len(files), processed=start, step="adding facts")
    if ctx.resume_state is None and unreadable:
        state["failed"] += len(unreadable)
        for path in unreadable:
            ctx.fail_item(path, "the file name is not UTF-8")

    index = start
    while index < len(files):
        try:
            documents = await run_file_io(_split_batch, base, files[index : index + _BATCH_FILES])
        except Exception:  # the batch's step expired or broke: read one file per item
            documents = []
            async with ctx.item(files[index]) as outcome:
                documents = await run_file_io(_split_batch, base, [files[index]])
            if not outcome.ok:
                state = _file_done(state, files[index], 0, failed=1)
                index += 1
                await ctx.checkpoint(state, processed_items=index)
                continue
        for document in documents:
            state = await _add_document(ctx, state, document)
            index += 1
            await ctx.checkpoint(state, processed_items=index)

    return {
        "path": params.path,
        "facts": state["facts"],
        "files": state["files"],
        "skipped": state["skipped"],
        "failed_files": state["failed"],
        "files_listed": state["files_listed"],
        "files_omitted": state["files"] - len(state["files_listed"]),
    }


async def _add_document(
    ctx: OperationContext, state: dict[str, Any], document: _Document
) -> dict[str, Any]:
    """Add one file's facts, checkpointing after each; the state once the file is done."""
    if document.skipped is not None:
        return _file_done(state, document.path, 0, skipped=1)
    if document.error is not None:
        ctx.fail_item(document.path, document.error)
        return _file_done(state, document.path, 0, failed=1)
    added = state["added"] if state["current"] == document.path else 0
    async with ctx.item(document.path) as outcome:
        for number in range(added, len(document.chunks)):
            heading, text = document.chunks[number]
            metadata = fact_metadata(document.path, heading, number)
            await trio.lowlevel.checkpoint()  # a cancel already due stops here, before the write
            # A store finishes a write it has begun even when its caller is cancelled
            # (whole or not at all), so the write is waited for: the checkpoint must
            # say whether this fact is in. The store's own deadlines bound the wait.
            with trio.CancelScope(shield=True):
                await add_fact(ctx.store, text, metadata)
            state = {**state, "current": document.path, "added": number + 1}
            state["facts"] += 1
            await ctx.checkpoint(state)
            await ctx.heartbeat()
    if not outcome.ok:
        return _file_done(state, document.path, state["added"], failed=1)
    return _file_done(state, document.path, len(document.chunks), files=1)
