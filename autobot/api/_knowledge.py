"""Knowledge base routes: add (one or a batch), read and delete facts, search them, crawl.

The models here check the shapes; the limits (text length, metadata size,
batch size) are checked by :class:`~autobot.knowledge.KnowledgeBase` itself,
so the Python API keeps them too, and answer 422 with ``fields`` the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_request
from quart_trio.wrappers import TrioResponse

from ..knowledge import (
    MAX_BATCH,
    MAX_LIMIT,
    MAX_METADATA_BYTES,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    AddressPolicy,
    KnowledgeBase,
    check_url,
)
from ..knowledge import NewFact as NewFactValue
from ..operations import DEFAULT_MAX_PAGES, MAX_PAGES, OperationPriority
from ._context import services
from ._openapi import ErrorDetail, openapi_extra
from ._operations import OperationStarted
from ._query import QueryInt

__all__ = ["knowledge"]

knowledge = Blueprint("knowledge", __name__)

Mode = Literal["keyword", "semantic", "hybrid"]


class NewFact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(description=f"1 to {MAX_TEXT_CHARS} characters")
    metadata: dict[str, Any] | None = Field(
        default=None, description=f"a JSON object of at most {MAX_METADATA_BYTES} bytes"
    )


class NewFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facts: list[NewFact] = Field(description=f"1 to {MAX_BATCH} facts, stored all or none")


class Added(BaseModel):
    id: str


class AddedMany(BaseModel):
    ids: list[str]


class StoredFact(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    created_at: str


class SearchHitOut(BaseModel):
    id: str
    text: str
    score: float = Field(description="higher is better")
    metadata: dict[str, Any]


class SearchResultsOut(BaseModel):
    mode: Mode
    results: list[SearchHitOut]
    semantic_error: ErrorDetail | SkipJsonSchema[None] = Field(
        default=None, description="why a hybrid search answered from keywords alone"
    )


class SearchQuery(BaseModel):
    q: str = Field(max_length=4096)
    limit: QueryInt = Field(default=10, ge=1, le=MAX_LIMIT)
    mode: Mode | None = None

    @field_validator("q")
    @classmethod
    def _words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or only whitespace")
        return value


def _base() -> KnowledgeBase:
    return services().knowledge


def _value(fact: NewFact) -> NewFactValue:
    return NewFactValue(fact.text, {} if fact.metadata is None else fact.metadata)


@knowledge.post("/api/knowledge/facts")
@validate_request(NewFact)
@document_response(Added, 201)
async def add_fact(data: NewFact) -> tuple[dict[str, Any], int]:
    """Store a fact; searchable on this server when the answer comes, on others soon after."""
    fact = await _base().add(data.text, data.metadata)
    return {"id": fact.id}, 201


@knowledge.post("/api/knowledge/facts/batch")
@validate_request(NewFacts)
@document_response(AddedMany, 201)
async def add_facts(data: NewFacts) -> tuple[dict[str, Any], int]:
    """Store 1 to 1,000 facts, all or none; ids in the order given."""
    facts = await _base().add_many([_value(fact) for fact in data.facts])
    return {"ids": [fact.id for fact in facts]}, 201


@knowledge.get("/api/knowledge/facts/<fact_id>")
@document_response(StoredFact)
async def get_fact(fact_id: str) -> dict[str, Any]:
    fact = await _base().get(fact_id)
    return fact.to_json()


@knowledge.delete("/api/knowledge/facts/<fact_id>")
@openapi_extra({"responses": {"204": {"description": "deleted"}}})
async def delete_fact(fact_id: str) -> Response:
    """Delete a fact: no later search on any server returns it."""
    await _base().delete(fact_id)
    return TrioResponse(status=204)


@knowledge.get("/api/knowledge/search")
@validate_querystring(SearchQuery)
@document_response(SearchResultsOut)
async def search(query_args: SearchQuery) -> dict[str, Any]:
    """Facts best matching ``q``, best first, under ``kb.search``.

    ``mode``: ``keyword`` (BM25 over stemmed words), ``semantic`` (nearest
    embeddings) or ``hybrid`` (both, fused by reciprocal rank); the default is
    ``hybrid`` with an embedding model configured, else ``keyword``, and
    without one ``semantic`` and ``hybrid`` answer 422
    ``embeddings_not_configured``. A hybrid search whose semantic half failed
    answers from keywords and says why in ``semantic_error``.
    """
    results = await _base().search(query_args.q, query_args.limit, query_args.mode)
    return results.to_json()


class CrawlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(max_length=MAX_URL_CHARS, description="an http or https URL")
    max_pages: StrictInt = Field(default=DEFAULT_MAX_PAGES, ge=1, le=MAX_PAGES)
    priority: Literal["high", "normal", "low"] = "normal"


@knowledge.post("/api/knowledge/crawl")
@validate_request(CrawlRequest)
@document_response(OperationStarted, 202)
async def crawl(data: CrawlRequest) -> tuple[dict[str, Any], int]:
    """Crawl the URL's site into facts: a ``kb_population`` operation, 202 with its id.

    The URL's host is resolved and checked now (under ``kb.fetch``): one that
    resolves to a loopback, private or link-local address answers 422
    ``url_not_allowed`` unless ``AUTOBOT_CRAWL_ALLOW_PRIVATE=1``; the crawl
    checks every page and redirect again.
    """
    app_services = services()
    policy = AddressPolicy(allow_private=app_services.settings.crawl_allow_private)
    await check_url(data.url, policy)
    record = await app_services.operations.submit(
        "kb_population",
        {"url": data.url, "max_pages": data.max_pages},
        priority=OperationPriority(data.priority),
    )
    return {"operation_id": record["id"], "operation": record}, 202
