"""``kb_population``: files, or a crawled site's pages, split into facts of the knowledge base.

Two modes, by the parameters: ``path`` (and ``patterns``) splits the text,
Markdown and reStructuredText files under a directory of the files root;
``url`` (and ``max_pages``) crawls a site (see **Crawling** below).

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

**Crawling** (``url``). The pages of the URL's site (same scheme, host and
port) are fetched breadth first by :class:`~autobot.knowledge._crawl.Crawler`,
each under ``kb.fetch`` and the address guard (loopback, private and
link-local addresses refused, at every redirect hop, unless
``crawl_allow_private``), robots.txt obeyed, at most ``max_pages`` pages
(a page disallowed by robots.txt is not fetched and does not count). When the
first page redirects to another origin (``http`` to ``https``, the bare
domain to ``www``), that origin becomes the site. Each page's readable text
(Markdown, from HTML) is split like a Markdown file (``.txt`` rules for
``text/plain``) into facts with metadata ``source`` = the page's URL (after
redirects), ``chunk``, ``heading`` and ``title``. Every fetched page is an
item: one that cannot be fetched (refused, unreachable, an HTTP error, too
slow) is a failed item, and the crawl goes on. A page's fetch runs outside
the item's budget (``kb.fetch`` bounds it); its facts are added inside, as a
file's are.

The checkpoint holds the frontier (the queue, and the URLs done), the page
being added and how many of its facts are in, so a resumed crawl fetches no
finished page again; a page interrupted between two of its facts is fetched
again and its remaining facts added (from the same chunk number on).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..._health import describe_error
from ..._logging import log_fields
from ...files import run_file_io
from ...knowledge._crawl import Crawler, Frontier, Page, Robots, normalise, origin_of
from ...knowledge._url_guard import AddressPolicy, parse_url
from ...storage import Store
from .._context import ItemOutcome, OperationContext
from .._registry import operation_type
from ._indexing import MAX_FILE_BYTES, list_files, read_capped
from ._tree import GlobPatterns

__all__ = [
    "CHUNK_CHARS",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_PATTERNS",
    "MAX_PAGES",
    "KbParams",
    "add_fact",
    "fact_metadata",
    "kb_population",
    "split_document",
]

log = logging.getLogger("autobot.operations")

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
#: Pages a crawl fetches unless ``max_pages`` says otherwise, and the most it may say.
DEFAULT_MAX_PAGES = 20
MAX_PAGES = 1000
# URLs a crawl keeps waiting in its queue (and in its checkpoint); links beyond are left out.
_QUEUED_URLS = 2000

_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_MARKDOWN_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_RST_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
# A sentence ends at a full stop, question or exclamation mark (closing quotes and
# brackets included) followed by white space.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"')\]»”’]*(\s+)")


class KbParams(BaseModel):
    """Either ``path`` (a directory or file under the files root) and the glob ``patterns``,
    or ``url`` (an ``http``/``https`` page whose site is crawled) and ``max_pages``.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str | None = Field(default=None, max_length=4096)
    patterns: GlobPatterns | None = None
    url: str | None = Field(default=None, max_length=2048)
    max_pages: int | None = Field(default=None, ge=1, le=MAX_PAGES)

    @model_validator(mode="after")
    def _one_source(self) -> KbParams:
        if (self.path is None) == (self.url is None):
            raise ValueError("give either path (files) or url (a site to crawl)")
        if self.path is not None and self.max_pages is not None:
            raise ValueError("max_pages goes with url, not with path")
        if self.url is not None and self.patterns is not None:
            raise ValueError("patterns go with path, not with url")
        return self


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


def fact_metadata(
    source: str, heading: str | None, chunk: int, *, title: str | None = None
) -> dict[str, Any]:
    """The metadata of one fact, within :data:`METADATA_MAX_BYTES` as JSON."""
    metadata: dict[str, Any] = {"source": source, "chunk": chunk}
    if heading:
        metadata["heading"] = heading[:_HEADING_CHARS]
    if title:
        metadata["title"] = title[:_HEADING_CHARS]
    # ASCII-escaped JSON is the longest way to count it: within it, within any.
    for key in ("title", "heading", "source"):
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
    """Split text and Markdown files under ``path``, or the pages of ``url``'s site, into facts."""
    if params.url is not None:
        return await _crawl(ctx, params.url, params.max_pages or DEFAULT_MAX_PAGES)
    assert params.path is not None
    patterns = list(DEFAULT_PATTERNS) if params.patterns is None else params.patterns
    ctx.progress(step="listing files")
    base, files, unreadable = await list_files(ctx, params.path, patterns)
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
    state, outcome = await _add_facts(ctx, state, document.path, document.path, document.chunks)
    if not outcome.ok:
        return _file_done(state, document.path, state["added"], failed=1)
    return _file_done(state, document.path, len(document.chunks), files=1)


async def _add_facts(
    ctx: OperationContext,
    state: dict[str, Any],
    key: str,
    source: str,
    chunks: Sequence[tuple[str | None, str]],
    *,
    title: str | None = None,
) -> tuple[dict[str, Any], ItemOutcome]:
    """Add the facts of one item (``key``: a file, or a page's URL), checkpointing after each.

    Starts after the ones a checkpoint says are in (``current`` is ``key``).
    """
    added = state["added"] if state["current"] == key else 0
    async with ctx.item(key) as outcome:
        for number in range(added, len(chunks)):
            heading, text = chunks[number]
            metadata = fact_metadata(source, heading, number, title=title)
            await trio.lowlevel.checkpoint()  # a cancel already due stops here, before the write
            # A store finishes a write it has begun even when its caller is cancelled
            # (whole or not at all), so the write is waited for: the checkpoint must
            # say whether this fact is in. The store's own deadlines bound the wait.
            with trio.CancelScope(shield=True):
                await add_fact(ctx.store, text, metadata)
            state = {**state, "current": key, "added": number + 1}
            state["facts"] += 1
            await ctx.checkpoint(state)
            await ctx.heartbeat()
    return state, outcome


# -- crawling ---------------------------------------------------------------------------------


def _empty_crawl_state(frontier: Frontier) -> dict[str, Any]:
    return {
        "frontier": frontier.to_state(),
        "current": None,  # the page being added (the URL taken from the queue)
        "added": 0,  # how many of its facts are in
        "pages": 0,  # pages taken: fetched, skipped or failed (what max_pages counts)
        "facts": 0,
        "pages_listed": [],
        "skipped": 0,
        "failed": 0,
        "disallowed": 0,
    }


def _page_done(
    state: dict[str, Any], frontier: Frontier, url: str | None, facts: int, **counts: int
) -> dict[str, Any]:
    listed = state["pages_listed"]
    if url is not None and len(listed) < RESULT_FILES:
        listed = [*listed, {"url": url, "facts": facts}]
    done = {
        **state,
        "frontier": frontier.to_state(),
        "current": None,
        "added": 0,
        "pages": state["pages"] + 1,
        "pages_listed": listed,
    }
    for key, value in counts.items():
        done[key] += value
    return done


def _chunks_of(page: Page) -> list[tuple[str | None, str]]:
    if page.kind == "skipped" or not page.index:
        return []
    return split_document("page.md" if page.kind == "html" else "page.txt", page.text)


async def _crawl(ctx: OperationContext, url: str, max_pages: int) -> dict[str, Any]:
    """Crawl ``url``'s site breadth first into facts (the module's **Crawling**)."""
    start = normalise(parse_url(url))
    if ctx.resume_state is None:
        frontier = Frontier(origin_of(parse_url(start)), limit=_QUEUED_URLS)
        frontier.add(start)
        state = _empty_crawl_state(frontier)
    else:
        state = ctx.resume_state
        frontier = Frontier.from_state(state["frontier"], limit=_QUEUED_URLS)
    policy = AddressPolicy(allow_private=ctx.settings.crawl_allow_private)
    async with Crawler(policy) as crawler:
        ctx.progress(step="reading robots.txt", processed=state["pages"])
        robots = await crawler.robots(frontier.site)
        while state["pages"] < max_pages and (state["current"] or frontier.queue):
            url = state["current"] or frontier.queue[0]
            waiting = len(frontier.queue) + (1 if state["current"] else 0)
            ctx.progress(
                total=min(max_pages, state["pages"] + waiting), step="crawling", message=url
            )
            if not robots.allows(url):
                # Not checkpointed by itself: a resume drops it again, and the count
                # goes into the next checkpoint.
                frontier.drop(url)
                state = {
                    **state,
                    "current": None,
                    "added": 0,
                    "disallowed": state["disallowed"] + 1,
                }
                continue
            try:
                page = await crawler.fetch(url)
            except Exception as error:  # a page's failure is data: refused, unreachable, slow
                frontier.mark_done(url)
                state = _page_done(state, frontier, None, 0, failed=1)
                await ctx.checkpoint(state, processed_items=state["pages"])
                ctx.fail_item(url, describe_error(error))
                continue
            if state["pages"] == 0 and not frontier.same_site(page.url):
                # The first page moved the site (http to https, the bare domain to www).
                frontier.site = origin_of(parse_url(page.url))
                robots = await crawler.robots(frontier.site)
            state, robots = await _take_page(ctx, state, frontier, robots, url, page)
            await ctx.checkpoint(state, processed_items=state["pages"])
    ctx.progress(total=state["pages"], processed=state["pages"], step="done")
    return {
        "url": start,
        "site": frontier.site,
        "robots": robots.why,
        "pages": state["pages"],
        "facts": state["facts"],
        "skipped": state["skipped"],
        "failed_pages": state["failed"],
        "disallowed": state["disallowed"],
        "not_crawled": len(frontier.queue),
        "pages_listed": state["pages_listed"],
    }


async def _take_page(
    ctx: OperationContext,
    state: dict[str, Any],
    frontier: Frontier,
    robots: Robots,
    url: str,
    page: Page,
) -> tuple[dict[str, Any], Robots]:
    """Queue a fetched page's links and add its facts; the state once the page is done."""
    already = page.url != url and page.url in frontier.seen
    for passed in (url, *page.redirects):
        frontier.mark_done(passed)
    skip = None
    if not frontier.same_site(page.url):
        skip = f"redirected off the site to {page.url}"
    elif already:
        skip = f"redirected to {page.url}, crawled already"
    elif page.url != url and not robots.allows(page.url):
        skip = f"redirected to {page.url}, disallowed by robots.txt"
    if skip is not None:
        log.info("crawl page skipped", extra=log_fields(operation=ctx.id, url=url, why=skip))
        return _page_done(state, frontier, None, 0, skipped=1), robots
    frontier.mark_done(page.url)
    for link in page.links:
        frontier.add(link)
    chunks = _chunks_of(page)
    # "added" is 0, or, when this page's facts were interrupted, how many are in.
    state = {**state, "frontier": frontier.to_state(), "current": url}
    await ctx.checkpoint(state)
    state, outcome = await _add_facts(ctx, state, url, page.url, chunks, title=page.title)
    if not outcome.ok:
        return _page_done(state, frontier, page.url, state["added"], failed=1), robots
    skipped = 1 if page.kind == "skipped" else 0
    return _page_done(state, frontier, page.url, len(chunks), skipped=skipped), robots
