"""Fetching a site's pages for the knowledge base: guarded, polite, bounded.

:class:`Crawler` fetches one URL at a time, each fetch (every redirect hop,
the body and the text extraction) under one ``kb.fetch`` deadline:

- **Guarded.** Every hop's host is checked by :mod:`._url_guard` and the
  connection goes to the very address that was checked: the request is sent
  to the IP, with the name in ``Host`` and as the TLS server name (so the
  certificate is still verified for the name). Redirects are followed here,
  never by httpx, at most :data:`MAX_REDIRECTS`, each hop checked again. No
  proxy from the environment, no cookies, and no connection is reused (the
  pool is keyed by address: a TLS connection verified for one name must not
  carry a request for another name on the same address).
- **Polite.** robots.txt (:meth:`Crawler.robots`) is read with the same guard
  and deadline and parsed by ``urllib.robotparser`` for the user agent
  ``AutoBot``, per RFC 9309: a 2xx file is obeyed (its first
  :data:`MAX_ROBOTS_BYTES`), a 4xx answer means no rules (everything
  allowed), a 5xx answer, a failure to connect or a refused address means
  nothing may be fetched. A page's ``<meta name="robots">`` is obeyed too:
  ``noindex`` adds no facts, ``nofollow`` follows none of its links.
- **Bounded.** Only ``text/html`` (and XHTML) and ``text/plain`` bodies are
  read, at most :data:`MAX_BODY_BYTES` (the rest is never read: the page is
  kept ``truncated``).

The readable text of an HTML page is extracted by trafilatura (the main
content without menus, sidebars, footers and banners, as Markdown with its
headings; chosen by measurement, see ``docs/knowledge.md``), in a thread
behind the knowledge base's one CPU limiter (:mod:`._cpu`); links are read by the standard library's
HTML parser. :class:`Frontier` is the breadth-first queue of one site's URLs,
JSON-serialisable for checkpoints.
"""

from __future__ import annotations

import urllib.robotparser
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx

from .._deadlines import deadline
from .._errors import AutoBotError
from ._cpu import run_cpu
from ._url_guard import AddressPolicy, allowed_address, parse_url

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_REDIRECTS",
    "USER_AGENT",
    "CrawlFailed",
    "Crawler",
    "Frontier",
    "Page",
    "Robots",
    "normalise",
    "origin_of",
]

#: The user agent robots.txt rules are matched against (and sent, with a version).
USER_AGENT = "AutoBot"
#: Redirects followed for one fetch.
MAX_REDIRECTS = 5
#: The most of a body that is read; the rest of a larger page is never read.
MAX_BODY_BYTES = 5 * 1024 * 1024
#: The most of a robots.txt that is parsed (RFC 9309 asks for at least 500 KiB).
MAX_ROBOTS_BYTES = 512 * 1024

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("text/plain",)
_REDIRECTS = (301, 302, 303, 307, 308)


class CrawlFailed(AutoBotError):
    """One page could not be fetched: a network error, an HTTP error status, too many redirects."""

    status = 502
    code = "crawl_failed"


def origin_of(url: httpx.URL) -> str:
    """``scheme://host:port``, the port always written: what same-site means."""
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{port}"


def normalise(url: httpx.URL) -> str:
    """The URL as the crawl keys it: fragment dropped, scheme and host lower case."""
    return str(url.copy_with(fragment=None))


@dataclass(slots=True)
class Page:
    """One fetched URL: where it ended up, and what it holds.

    ``kind`` is ``"html"``, ``"text"`` or ``"skipped"`` (another content
    type: ``text`` is empty, ``skip_reason`` says why). ``url`` is the URL
    after redirects.
    """

    url: str
    status: int
    kind: str
    text: str = ""
    title: str | None = None
    links: list[str] = field(default_factory=list)
    index: bool = True
    follow: bool = True
    truncated: bool = False
    skip_reason: str | None = None
    redirects: list[str] = field(default_factory=list)


class _Links(HTMLParser):
    """``<a>``/``<area>`` hrefs, ``<base href>`` and ``<meta name=robots>`` of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base: str | None = None
        self.robots: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in ("a", "area") and values.get("href"):
            if "nofollow" not in values.get("rel", "").lower().split():
                self.hrefs.append(values["href"].strip())
        elif tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"].strip()
        elif tag == "meta" and values.get("name", "").lower() in ("robots", USER_AGENT.lower()):
            self.robots.update(
                part.strip() for part in values.get("content", "").lower().split(",")
            )


def _links(base: httpx.URL, hrefs: Iterable[str]) -> list[str]:
    found: dict[str, None] = {}
    for href in hrefs:
        try:
            url = base.join(href)
        except (httpx.InvalidURL, ValueError):
            continue
        if url.scheme in ("http", "https") and url.host:
            found[normalise(url)] = None
    return list(found)


def _read_html(url: str, html: str) -> tuple[str, str | None, list[str], set[str]]:
    """Markdown text, title, links and meta robots of one page (CPU work, in a thread)."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    base = httpx.URL(url)
    if parser.base:
        try:
            base = base.join(parser.base)
        except (httpx.InvalidURL, ValueError):
            pass
    links = _links(base, parser.hrefs)
    import trafilatura  # here: its import costs start-up more than a crawl's first page

    text = (
        trafilatura.extract(
            html,
            url=url,
            output_format="markdown",
            include_comments=False,
            include_tables=True,
            include_links=False,
            include_images=False,
        )
        or ""
    )
    metadata = trafilatura.extract_metadata(html)
    title = metadata.title if metadata is not None and metadata.title else None
    return text, title, links, parser.robots


@dataclass(slots=True)
class Robots:
    """One site's robots.txt rules for :data:`USER_AGENT`; ``why`` says where they came from."""

    parser: urllib.robotparser.RobotFileParser | None
    allow_all: bool
    why: str

    def allows(self, url: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(USER_AGENT, url)


@dataclass(slots=True)
class _Body:
    url: httpx.URL
    status: int
    content_type: str
    data: bytes
    encoding: str
    truncated: bool
    redirects: list[str]


class Crawler:
    """Fetches pages under the guard of ``policy``; use as ``async with Crawler(policy)``."""

    def __init__(self, policy: AddressPolicy, *, transport: httpx.AsyncBaseTransport | None = None):
        self.policy = policy
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None),  # each fetch is bounded by kb.fetch
            follow_redirects=False,  # every hop is checked here
            trust_env=False,  # no proxy: the connection goes to the checked address
            headers={"User-Agent": f"{USER_AGENT}/1.0 (knowledge base crawler)"},
            # No connection is kept for another request: pooled by address, one made
            # (and its certificate verified) for one name could carry another's.
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=0),
            transport=transport,
        )

    async def __aenter__(self) -> Crawler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def _get(
        self, url: httpx.URL, accept: str, limit: int, *, body_of: tuple[str, ...] | None
    ) -> _Body:
        """GET ``url``, following checked redirects; the body if its type is in ``body_of``.

        ``body_of`` ``None``: any type. Only a 2xx answer's body is read.
        """
        redirects: list[str] = []
        for _ in range(MAX_REDIRECTS + 1):
            address = await allowed_address(url, self.policy)
            # Connection: close, so no connection carries a second request (see __init__).
            headers = {"Host": url.netloc.decode("ascii"), "Accept": accept, "Connection": "close"}
            extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
            request = self._client.build_request(
                "GET", url.copy_with(host=address), headers=headers, extensions=extensions
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise CrawlFailed(f"{normalise(url)}: {type(error).__name__}: {error}") from None
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    redirects.append(normalise(url))
                    try:
                        url = parse_url(str(url.join(location)))
                    except httpx.InvalidURL:
                        raise CrawlFailed(f"{normalise(url)}: a bad redirect") from None
                    continue
                content_type = response.headers.get("content-type", "")
                media = content_type.split(";", 1)[0].strip().lower()
                data, truncated = b"", False
                if (body_of is None or media in body_of) and response.status_code < 300:
                    data, truncated = await _read_capped(response, limit)
                return _Body(
                    url,
                    response.status_code,
                    media,
                    data,
                    response.encoding or "utf-8",
                    truncated,
                    redirects,
                )
            except httpx.HTTPError as error:
                raise CrawlFailed(f"{normalise(url)}: {type(error).__name__}: {error}") from None
            finally:
                await response.aclose()
        raise CrawlFailed(f"{redirects[0]}: more than {MAX_REDIRECTS} redirects")

    async def robots(self, site: str) -> Robots:
        """The robots.txt rules of ``site`` (an :func:`origin_of`), under ``kb.fetch``."""
        url = httpx.URL(site).copy_with(path="/robots.txt")
        try:
            with deadline("kb.fetch"):
                body = await self._get(url, "text/plain", MAX_ROBOTS_BYTES, body_of=None)
        except AutoBotError as error:  # refused, unreachable or too slow: RFC 9309's "unreachable"
            return Robots(
                None, False, f"robots.txt unreachable ({error.message}): nothing is fetched"
            )
        if 400 <= body.status < 500:
            return Robots(None, True, f"no robots.txt ({body.status}): everything is allowed")
        if body.status >= 300:
            why = f"robots.txt answered {body.status}: nothing is fetched"
            return Robots(None, False, why)
        parser = urllib.robotparser.RobotFileParser()
        parser.parse(body.data.decode("utf-8", "replace").splitlines())
        return Robots(parser, True, "robots.txt obeyed")

    async def fetch(self, url: str) -> Page:
        """One page, under ``kb.fetch``: fetched, its text extracted, its links found.

        Raises ``ValidationFailed`` ``url_not_allowed`` when a hop is refused,
        :class:`CrawlFailed` on a network error or an HTTP error status, and
        ``DeadlineExceeded`` when ``kb.fetch`` expires.
        """
        with deadline("kb.fetch"):
            body = await self._get(
                parse_url(url),
                "text/html, application/xhtml+xml, text/plain;q=0.8",
                MAX_BODY_BYTES,
                body_of=_HTML_TYPES + _TEXT_TYPES,
            )
            final = normalise(body.url)
            if body.status >= 400:
                raise CrawlFailed(f"{final}: HTTP {body.status}")
            if body.status >= 300 or body.content_type not in _HTML_TYPES + _TEXT_TYPES:
                kind = body.content_type or "no content type"
                why = f"HTTP {body.status}" if body.status >= 300 else f"not HTML or text ({kind})"
                return Page(
                    final, body.status, "skipped", skip_reason=why, redirects=body.redirects
                )
            try:
                text = body.data.decode(body.encoding, "replace")
            except LookupError:  # a charset Python does not know
                text = body.data.decode("utf-8", "replace")
            page = Page(
                final, body.status, "text", truncated=body.truncated, redirects=body.redirects
            )
            if body.content_type in _TEXT_TYPES:
                page.text = text
                return page
            page.kind = "html"
            page.text, page.title, page.links, robots = await run_cpu(_read_html, final, text)
            page.index = "noindex" not in robots and "none" not in robots
            page.follow = "nofollow" not in robots and "none" not in robots
            if not page.follow:
                page.links = []
            return page


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the (decoded) body; True if there was more."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > limit:
            parts.append(chunk[: limit - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


class Frontier:
    """The breadth-first queue of one site's URLs, each queued once.

    ``site`` is an :func:`origin_of`; links elsewhere are not queued. ``seen``
    holds every URL queued or taken, so no page is fetched twice; at most
    ``limit`` URLs wait at once (the rest of a huge site is left out).
    """

    def __init__(self, site: str, *, limit: int) -> None:
        self.site = site
        self.limit = limit
        self.queue: deque[str] = deque()
        self.done: list[str] = []
        self.seen: set[str] = set()

    def same_site(self, url: str) -> bool:
        try:
            return origin_of(httpx.URL(url)) == self.site
        except httpx.InvalidURL:
            return False

    def add(self, url: str) -> bool:
        """Queue ``url`` if it is on the site, new, and there is room; True if queued."""
        if url in self.seen or len(self.queue) >= self.limit or not self.same_site(url):
            return False
        self.seen.add(url)
        self.queue.append(url)
        return True

    def mark_done(self, url: str) -> None:
        """``url`` taken (fetched, skipped or failed) or reached by a redirect: not queued again."""
        if url in self.queue:
            self.queue.remove(url)
        if url not in self.done:
            self.done.append(url)
        self.seen.add(url)

    def drop(self, url: str) -> None:
        """``url`` taken but not fetched (robots.txt): not queued again in this run.

        Not kept in the checkpoint (the same rules drop it again after a
        resume), so skipping a great many URLs does not grow it.
        """
        if url in self.queue:
            self.queue.remove(url)
        self.seen.add(url)

    def to_state(self) -> dict[str, Any]:
        return {"site": self.site, "queue": list(self.queue), "done": list(self.done)}

    @classmethod
    def from_state(cls, state: dict[str, Any], *, limit: int) -> Frontier:
        frontier = cls(state["site"], limit=limit)
        frontier.queue.extend(state["queue"])
        frontier.done.extend(state["done"])
        frontier.seen.update(frontier.queue, frontier.done)
        return frontier
