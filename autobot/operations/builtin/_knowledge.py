"""Upkeep of the knowledge base: duplicate facts removed, a term-vector index built.

The knowledge base is, for now, the store's facts (``put_fact``,
``list_facts``, ``delete_fact``); both types work on them through the store,
so they work the same on either backend.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

from ..._errors import NotFound
from ...files import discard_file, publish_file, run_file_io, temporary_path, write_at
from ...storage import Fact, now
from .._context import OperationContext
from .._registry import NoParams, operation_type
from ._analysis import smooth_idf, terms

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "duplicate_groups", "normalised_text"]

_LISTED = 1000
# Facts embedded per item of the embedding pass.
_EMBED_BATCH = 256
_GROUPS_LISTED = 100

# -- kb_optimization ---------------------------------------------------------------------


class KbOptimizationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    dry_run: StrictBool = False


def normalised_text(text: str) -> str:
    """What two facts must share to be duplicates: the words, whitespace and case aside."""
    return " ".join(text.split()).casefold()


def _age(fact: Fact) -> tuple[str, str]:
    return fact.created_at, fact.id


def duplicate_groups(facts: Sequence[Fact]) -> list[list[Fact]]:
    """Facts sharing a normalised text, two or more to a group, the oldest first.

    Groups come in the order of their oldest fact; facts created in the same
    millisecond keep the store's order (``list_facts`` is oldest first).
    """
    groups: dict[str, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(normalised_text(fact.text), []).append(fact)
    found = [sorted(group, key=lambda fact: fact.created_at) for group in groups.values()]
    return sorted((group for group in found if len(group) > 1), key=lambda g: _age(g[0]))


def _record_bytes(fact: Fact) -> int:
    return len(json.dumps({"kind": "fact", **fact.to_json()}, ensure_ascii=False).encode())


async def remove_duplicates(ctx: OperationContext, state: dict[str, Any], *, dry_run: bool) -> None:
    """The duplicate pass: each group of duplicates (an item) keeps its oldest fact.

    ``state["after"]`` is the oldest fact of the last group done (its
    ``created_at`` and id), so a resumed pass skips the groups it finished
    (without ``dry_run`` their duplicates are gone anyway). A fact that
    vanished meanwhile is not counted as deleted.
    """
    ctx.progress(step="finding duplicates")
    groups = duplicate_groups(await ctx.store.list_facts())
    after = tuple(state["after"]) if state["after"] else None
    groups = [group for group in groups if after is None or _age(group[0]) > after]
    ctx.progress(total=state["groups"] + len(groups), processed=state["groups"])
    ctx.progress(step="dry run" if dry_run else "deleting duplicates")
    for group in groups:
        kept, extra = group[0], group[1:]
        deleted: list[Fact] = []
        async with ctx.item(f"duplicates of fact {kept.id}"):
            for fact in extra:
                if not dry_run:
                    try:
                        await ctx.store.delete_fact(fact.id)
                    except NotFound:
                        continue
                    await ctx.heartbeat()
                deleted.append(fact)
        state["after"] = list(_age(kept))
        state["groups"] += 1
        state["deleted"] += len(deleted)
        state["bytes_saved"] += sum(_record_bytes(fact) for fact in deleted)
        room = _LISTED - len(state["deleted_ids"])
        state["deleted_ids"].extend(fact.id for fact in deleted[: max(0, room)])
        if len(state["listed"]) < _GROUPS_LISTED:
            state["listed"].append(
                {"kept": kept.id, "deleted": [fact.id for fact in deleted], "text": kept.text[:80]}
            )
        await ctx.checkpoint(state, processed_items=state["groups"])


async def embed_missing(ctx: OperationContext, *, dry_run: bool) -> dict[str, Any]:
    """The embedding pass: facts without an embedding (a failed or lost one) get one.

    Only with an embedding model configured. Each batch of
    :data:`_EMBED_BATCH` facts is an item; a batch the provider fails is a
    failed item and its facts stay keyword-only. Nothing is checkpointed: a
    resumed run looks for the facts still missing one.
    """
    knowledge = ctx.knowledge
    if knowledge is None or knowledge.semantic is None:
        return {"embedding_model": None}
    ctx.progress(step="finding facts without an embedding")
    missing = await knowledge.unembedded()
    embedded = failed = 0
    if not dry_run:
        batches = -(-len(missing) // _EMBED_BATCH)
        ctx.progress(step="embedding", total=(ctx.total_items or 0) + batches)
        for start in range(0, len(missing), _EMBED_BATCH):
            batch = missing[start : start + _EMBED_BATCH]
            async with ctx.item(f"embeddings of {len(batch)} facts") as outcome:
                embedded += await knowledge.embed(batch)
            if not outcome.ok:
                failed += len(batch)
            ctx.progress(advance=1)
    return {
        "embedding_model": knowledge.semantic.model,
        "missing_embeddings": len(missing),
        "embedded": embedded,
        "embedding_failed": failed,
    }


@operation_type("kb_optimization", params=KbOptimizationParams)
async def kb_optimization(ctx: OperationContext, params: KbOptimizationParams) -> dict[str, Any]:
    """Compact the knowledge base: delete duplicate facts, keeping the oldest of each.

    Facts are duplicates when their texts match after whitespace is collapsed
    and case folded. With ``dry_run`` nothing is deleted and the result says
    what would be. ``bytes_saved`` counts the deleted facts' stored records.
    """
    state = ctx.resume_state or {
        "after": None,
        "groups": 0,
        "deleted": 0,
        "deleted_ids": [],
        "bytes_saved": 0,
        "listed": [],
    }
    await remove_duplicates(ctx, state, dry_run=params.dry_run)
    embedded = await embed_missing(ctx, dry_run=params.dry_run)
    return {
        **embedded,
        "dry_run": params.dry_run,
        "duplicate_groups": state["groups"],
        "groups": state["listed"],
        "groups_left_out": state["groups"] - len(state["listed"]),
        "deleted": state["deleted"],
        "deleted_ids": state["deleted_ids"],
        "deleted_ids_left_out": state["deleted"] - len(state["deleted_ids"]),
        "bytes_saved": state["bytes_saved"],
    }


# -- vector_indexing -------------------------------------------------------------------------

#: The ``format`` and ``version`` of the header line of ``<data>/knowledge/vectors.jsonl``.
INDEX_FORMAT = "autobot.term_vectors"
INDEX_VERSION = 1
#: The vocabulary keeps at most this many terms, those in the most facts.
VOCABULARY_LIMIT = 100_000
# Facts tokenised, or vectorised and written, per file-I/O thread call.
_FREQUENCY_BATCH = 2000
_VECTOR_BATCH = 256


def _document_frequencies(texts: Sequence[str]) -> Counter[str]:
    frequencies: Counter[str] = Counter()
    for text in texts:
        frequencies.update(set(terms(text)))
    return frequencies


def _vector(
    text: str, index: dict[str, int], idf: Sequence[float]
) -> tuple[list[int], list[float]]:
    """A fact's sparse TF-IDF vector, ``(1 + ln tf) × idf``, of length 1."""
    counts = Counter(term for term in terms(text) if term in index)
    weights = {
        index[term]: (1 + math.log(count)) * idf[index[term]] for term, count in counts.items()
    }
    norm = sum(weight * weight for weight in weights.values()) ** 0.5
    ordered = sorted(weights)
    return ordered, [round(weights[i] / norm, 6) for i in ordered]


def _write_vectors(
    path: Path,
    offset: int,
    facts: Sequence[tuple[str, str]],
    index: dict[str, int],
    idf: Sequence[float],
) -> list[int]:
    """Append one line per ``(id, text)``; returns each line's length in bytes."""
    lines = []
    for fact_id, text in facts:
        indices, weights = _vector(text, index, idf)
        record = {"id": fact_id, "terms": indices, "weights": weights}
        lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    write_at(path, offset, b"".join(lines))
    return [len(line) for line in lines]


def _reopen(path: Path, size: int) -> tuple[list[str], list[float], set[str]] | None:
    """The vocabulary and the fact ids of a partly written index; ``None`` if unusable.

    The file is cut back to ``size``, the end of the last line the checkpoint counted.
    """
    try:
        if path.stat().st_size < size:
            return None
        os.truncate(path, size)
        with path.open("rb") as file:
            header = json.loads(file.readline())
            vocabulary = json.loads(file.readline())
            ids = {json.loads(line)["id"] for line in file}
    except (OSError, ValueError, KeyError):
        return None
    if header.get("format") != INDEX_FORMAT or header.get("version") != INDEX_VERSION:
        return None
    return vocabulary["terms"], vocabulary["idf"], ids


async def _start_index(
    ctx: OperationContext, final: Path, facts: Sequence[Fact]
) -> tuple[dict[str, Any], list[str], list[float]]:
    """Count the terms of every fact, then write the header and vocabulary lines."""
    ctx.progress(step="building the vocabulary")
    frequencies: Counter[str] = Counter()
    for start in range(0, len(facts), _FREQUENCY_BATCH):
        texts = [fact.text for fact in facts[start : start + _FREQUENCY_BATCH]]
        frequencies.update(await run_file_io(_document_frequencies, texts))
    common = sorted(frequencies.items(), key=lambda item: (-item[1], item[0]))[:VOCABULARY_LIMIT]
    vocabulary = sorted(term for term, _ in common)
    idf = [round(smooth_idf(len(facts), frequencies[term]), 6) for term in vocabulary]
    header = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "vocabulary_size": len(vocabulary),
        "facts": len(facts),
        "created_at": now()[0],
        "weighting": "(1 + ln tf) × (ln((1 + facts) / (1 + df)) + 1), length 1",
        "terms": "lower-case words of two letters or more, English stop words dropped",
    }
    head = b"".join(
        json.dumps(line, ensure_ascii=False).encode() + b"\n"
        for line in (header, {"terms": vocabulary, "idf": idf})
    )
    await run_file_io(_make_directory, final.parent)
    temporary = await run_file_io(temporary_path, final)
    try:
        offset = await run_file_io(write_at, temporary, 0, head)
    except BaseException:
        await discard_file(temporary)  # noqa: ASYNC102 - discard_file shields itself
        raise
    state = {"temporary": temporary.name, "offset": offset, "indexed": 0}
    return state, vocabulary, idf


def _make_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


@operation_type("vector_indexing", params=NoParams)
async def vector_indexing(ctx: OperationContext, params: NoParams) -> dict[str, Any]:
    """Build the term-vector index of the facts: ``<data>/knowledge/vectors.jsonl``.

    Each fact (an item) gets a sparse TF-IDF vector over the vocabulary of
    all facts (lower-case words, stop words dropped). The file is JSON lines:
    a header (``format``, ``version``, ``vocabulary_size``, how it weighs),
    the vocabulary with each term's IDF (a term's index is its position), then
    one ``{"id", "terms", "weights"}`` line per fact, each vector of length 1,
    so a search vectorises a query the same way and ranks by dot product.
    It is written to a temporary file renamed at the end; a resumed run reads
    back the vocabulary and the facts already written and goes on with the
    rest (facts added meanwhile are indexed over that vocabulary). When an
    embedding model is configured, embeddings will take the place of these
    vectors.
    """
    state = ctx.resume_state
    if state is not None and state.get("result") is not None:
        return state["result"]
    final = Path(ctx.settings.data_dir) / "knowledge" / "vectors.jsonl"
    facts = await ctx.store.list_facts()
    reopened = None
    if state is not None:
        reopened = await run_file_io(_reopen, final.with_name(state["temporary"]), state["offset"])
    if state is None or reopened is None:
        state, vocabulary, idf = await _start_index(ctx, final, facts)
        done: set[str] = set()
        await ctx.checkpoint(state, processed_items=0)
    else:
        vocabulary, idf, done = reopened
    temporary = final.with_name(state["temporary"])
    index = {term: position for position, term in enumerate(vocabulary)}
    pending = [fact for fact in facts if fact.id not in done]
    ctx.progress(
        total=state["indexed"] + len(pending), processed=state["indexed"], step="writing vectors"
    )
    for start in range(0, len(pending), _VECTOR_BATCH):
        chunk = [(fact.id, fact.text) for fact in pending[start : start + _VECTOR_BATCH]]
        lengths = await run_file_io(_write_vectors, temporary, state["offset"], chunk, index, idf)
        for length in lengths:
            state["offset"] += length
            state["indexed"] += 1
            await ctx.checkpoint(state, processed_items=state["indexed"])
    await run_file_io(publish_file, temporary, final, state["offset"])
    result = {
        "path": "knowledge/vectors.jsonl",
        "facts_indexed": state["indexed"],
        "vocabulary_size": len(vocabulary),
        "bytes": state["offset"],
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
    }
    state["result"] = result
    await ctx.checkpoint(state)
    return result
