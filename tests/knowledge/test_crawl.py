"""Crawling a real site on loopback: the address guard, robots.txt, links, limits, resume."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme

from autobot import DeadlineExceeded, DeadlineTable, Settings, ValidationFailed, install_deadlines
from autobot.knowledge._crawl import MAX_BODY_BYTES, Crawler, CrawlFailed
from autobot.knowledge._url_guard import AddressPolicy, check_url
from autobot.operations import OperationStatus, run_operation
from autobot.storage import Store, open_embedded_store
from tests.support.site_server import Answer, Site, html_page, serve_site

ARTICLE = (
    "<h1>Reading the tides</h1>"
    + "".join(
        f"<p>Paragraph {n} tells how the fishermen of the northern coast read the tides "
        "before dawn, and why the moon matters more than the wind.</p>"
        for n in range(4)
    )
    + "<h2>Nets</h2><p>Nets are mended in winter, when the boats stay in the harbour.</p>"
)
MENU = "".join(
    f'<div class="m"><a href="http://example.invalid/menu{n}">Menu entry {n}</a></div>'
    for n in range(20)
)


def a_site() -> Site:
    """Home links to two pages (one twice, with a fragment), a private page, off-site and a PDF."""
    return Site(
        {
            "/robots.txt": Answer(
                b"User-agent: *\nDisallow: /private\n", content_type="text/plain"
            ),
            "/": html_page(
                "Home",
                f"<div>{MENU}</div><article>{ARTICLE}</article>"
                '<a href="/boats">Boats</a> <a href="/boats#top">Boats again</a>'
                '<a href="weather?day=1">Weather</a> <a href="/private/keys">Keys</a>'
                '<a href="http://example.invalid/elsewhere">Elsewhere</a>'
                '<a href="/report.pdf">Report</a> <a href="mailto:x@example.invalid">Mail</a>',
            ),
            "/boats": html_page(
                "Boats",
                "<p>The harbour keeps forty boats, most of them built of larch by hand.</p>"
                '<a href="/">Home</a>',
            ),
            "/weather?day=1": Answer(
                b"Storms come from the west in October.", content_type="text/plain"
            ),
            "/private/keys": html_page("Keys", "<p>Nobody may read this.</p>"),
            "/report.pdf": Answer(b"%PDF-1.4", content_type="application/pdf"),
        }
    )


def crawl_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", crawl_allow_private=True)


async def crawl(settings: Settings, store: Store, url: str, **params: Any) -> dict[str, Any]:
    run = await run_operation(
        "kb_population", {"url": url, **params}, settings=settings, store=store
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    assert run.outcome.result is not None
    return run.outcome.result


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with open_embedded_store(tmp_path / "store") as opened:
        yield opened


# -- the address guard --------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "240.0.0.1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_private_addresses_are_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not AddressPolicy().allows(ip)
    assert AddressPolicy(allow_private=True).allows(ip)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().allows(ipaddress.ip_address(address))


def test_also_allowed_networks() -> None:
    policy = AddressPolicy(also_allowed=[ipaddress.ip_network("127.0.0.1/32")])
    assert policy.allows(ipaddress.ip_address("127.0.0.1"))
    assert policy.allows(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.allows(ipaddress.ip_address("127.0.0.3"))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8000/", "127.0.0.1"),
        ("http://localhost/", "localhost"),
        ("http://[::1]/x", "::1"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.0.0.8/", "10.0.0.8"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:secret@example.com/", "user name or password"),
        ("not a url", "only http and https"),
        ("http://no-such-host.invalid/", "does not resolve"),
    ],
)
async def test_check_url_refuses(url: str, says: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await check_url(url, AddressPolicy())
    assert refused.value.code == "url_not_allowed"
    assert says in refused.value.message
    assert refused.value.details["fields"][0]["field"] == "url"


async def test_a_redirect_to_a_refused_address_is_not_followed() -> None:
    # The site is on 127.0.0.1, which this policy allows; 127.0.0.3 (also loopback) is not.
    secret = Site({"/secret": html_page("Secret", "<p>internal</p>")})
    async with serve_site(secret, "127.0.0.3") as inside:
        site = Site(
            {
                "/go": Answer(status=302, headers=[("location", f"{inside}/secret")]),
                "/hop": Answer(status=301, headers=[("location", "/go")]),
                "/fine": html_page("Fine", "<p>A page on the allowed address.</p>"),
            }
        )
        async with serve_site(site) as base:
            policy = AddressPolicy(also_allowed=[ipaddress.ip_network("127.0.0.1/32")])
            async with Crawler(policy) as crawler:
                page = await crawler.fetch(f"{base}/fine")
                assert "allowed address" in page.text
                for start in ("/go", "/hop"):
                    with pytest.raises(ValidationFailed) as refused:
                        await crawler.fetch(f"{base}{start}")
                    assert refused.value.code == "url_not_allowed"
                    assert "127.0.0.3" in refused.value.message
            async with Crawler(AddressPolicy()) as crawler:
                with pytest.raises(ValidationFailed):
                    await crawler.fetch(f"{base}/fine")  # 127.0.0.1 itself, by default
        assert site.hits == ["/fine", "/go", "/hop", "/go"]
    assert secret.hits == []  # never contacted


async def test_the_request_goes_to_the_checked_address_with_the_name_as_host() -> None:
    site = Site({"/": html_page("Home", "<p>Served by name.</p>")})
    async with serve_site(site) as base:
        port = base.rsplit(":", 1)[1]
        async with Crawler(AddressPolicy(allow_private=True)) as crawler:
            page = await crawler.fetch(f"http://localhost:{port}/")
    assert page.url == f"http://localhost:{port}/"
    assert site.hosts == [f"localhost:{port}"]


async def test_redirect_loops_and_error_statuses_fail_the_page() -> None:
    site = Site(
        {
            "/loop": Answer(status=302, headers=[("location", "/loop")]),
            "/gone": Answer(b"gone", 410, "text/plain"),
        }
    )
    async with serve_site(site) as base, Crawler(AddressPolicy(allow_private=True)) as crawler:
        with pytest.raises(CrawlFailed, match="more than 5 redirects"):
            await crawler.fetch(f"{base}/loop")
        with pytest.raises(CrawlFailed, match="HTTP 410"):
            await crawler.fetch(f"{base}/gone")
    assert site.hits.count("/loop") == 6


async def test_a_large_body_is_read_only_up_to_the_cap() -> None:
    big = b"word " * (MAX_BODY_BYTES // 5 + 100_000)
    site = Site({"/big.txt": Answer(big, content_type="text/plain")})
    async with serve_site(site) as base, Crawler(AddressPolicy(allow_private=True)) as crawler:
        page = await crawler.fetch(f"{base}/big.txt")
    assert page.truncated and len(page.text) == MAX_BODY_BYTES


# -- robots.txt -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "allowed"),
    [
        (Answer(b"User-agent: AutoBot\nDisallow: /\n", content_type="text/plain"), False),
        (Answer(b"User-agent: other\nDisallow: /\n", content_type="text/plain"), True),
        (Answer(b"missing", 404, "text/plain"), True),
        (Answer(b"forbidden", 403, "text/plain"), True),
        (Answer(b"broken", 503, "text/plain"), False),
    ],
)
async def test_robots_txt_per_rfc_9309(answer: Answer, allowed: bool) -> None:
    site = Site({"/robots.txt": answer})
    async with serve_site(site) as base, Crawler(AddressPolicy(allow_private=True)) as crawler:
        robots = await crawler.robots(base + "/")
    assert robots.allows(f"{base}/page") is allowed


async def test_unreachable_robots_txt_allows_nothing() -> None:
    async with Crawler(AddressPolicy()) as crawler:
        robots = await crawler.robots("http://127.0.0.1:9")  # refused by the guard
    assert not robots.allows("http://127.0.0.1:9/")
    assert "unreachable" in robots.why


# -- the kb_population operation in URL mode ---------------------------------------------------


async def test_a_site_becomes_facts(tmp_path: Path, store: Store) -> None:
    site = a_site()
    async with serve_site(site) as base:
        result = await crawl(crawl_settings(tmp_path), store, f"{base}/")
    assert "/private/keys" not in site.hits  # robots.txt
    assert site.hits.count("/boats") == 1 and site.hits.count("/") == 1
    assert sorted(site.hits) == sorted(
        ["/robots.txt", "/", "/boats", "/weather?day=1", "/report.pdf"]
    )
    facts = await store.list_facts()
    sources = {fact.metadata["source"] for fact in facts}
    assert sources == {f"{base}/", f"{base}/boats", f"{base}/weather?day=1"}
    home = [fact for fact in facts if fact.metadata["source"] == f"{base}/"]
    text = "\n".join(fact.text for fact in home)
    assert "fishermen of the northern coast" in text and "Nets are mended" in text
    assert "Menu entry" not in text  # boilerplate left out
    assert {fact.metadata.get("heading") for fact in home} >= {"Reading the tides", "Nets"}
    assert all(fact.metadata["title"] == "Reading the tides" for fact in home)  # its h1
    assert result["pages"] == 4 and result["skipped"] == 1 and result["disallowed"] == 1
    assert result["failed_pages"] == 0 and result["facts"] == len(facts)
    assert {page["url"] for page in result["pages_listed"]} == {
        f"{base}/",
        f"{base}/boats",
        f"{base}/weather?day=1",
        f"{base}/report.pdf",
    }


async def test_max_pages_bounds_the_crawl(tmp_path: Path, store: Store) -> None:
    pages = {
        f"/p{n}": html_page(f"P{n}", f"<p>Page {n} of the chain.</p><a href='/p{n + 1}'>next</a>")
        for n in range(10)
    }
    site = Site(pages)
    async with serve_site(site) as base:
        result = await crawl(crawl_settings(tmp_path), store, f"{base}/p0", max_pages=3)
    assert site.hits == ["/robots.txt", "/p0", "/p1", "/p2"]
    assert result["pages"] == 3 and result["not_crawled"] == 1


async def test_private_targets_fail_without_the_flag(tmp_path: Path, store: Store) -> None:
    site = a_site()
    async with serve_site(site) as base:
        run = await run_operation(
            "kb_population",
            {"url": f"{base}/"},
            settings=Settings(data_dir=tmp_path / "data"),
            store=store,
        )
    assert run.outcome.status is OperationStatus.COMPLETED
    assert run.outcome.result is not None and run.outcome.result["pages"] == 0
    assert "unreachable" in run.outcome.result["robots"]
    assert site.hits == [] and await store.list_facts() == []


async def test_a_failed_page_is_a_failed_item(tmp_path: Path, store: Store) -> None:
    site = Site(
        {
            "/": html_page(
                "Home", "<p>Home page text.</p><a href='/broken'>b</a><a href='/ok'>o</a>"
            ),
            "/broken": Answer(b"oops", 500, "text/plain"),
            "/ok": html_page("Ok", "<p>This page is fine.</p>"),
        }
    )
    async with serve_site(site) as base:
        run = await run_operation(
            "kb_population", {"url": f"{base}/"}, settings=crawl_settings(tmp_path), store=store
        )
    assert run.outcome.status is OperationStatus.COMPLETED
    result = run.outcome.result
    assert result is not None and result["failed_pages"] == 1 and result["pages"] == 3
    assert result["failures"] == [{"item": f"{base}/broken", "error": f"{base}/broken: HTTP 500"}]
    assert {fact.metadata["source"] for fact in await store.list_facts()} == {
        f"{base}/",
        f"{base}/ok",
    }


async def test_resume_fetches_no_finished_page_again(tmp_path: Path, store: Store) -> None:
    pages = {
        f"/p{n}": html_page(
            f"P{n}",
            "".join(
                f"<p>Paragraph {k} of page {n}. " + "Filler words here. " * 90 + "</p>"
                for k in range(3)
            )
            + (f"<a href='/p{n + 1}'>next</a>" if n < 4 else ""),
        )
        for n in range(5)
    }
    site = Site(pages)
    settings = crawl_settings(tmp_path)
    async with serve_site(site) as base:
        params = {"url": f"{base}/p0"}
        first = await run_operation(
            "kb_population",
            params,
            settings=settings,
            store=store,
            stop_when=lambda ctx: ctx.processed_items >= 2,
        )
        assert first.outcome.status is OperationStatus.CANCELLED
        hits_before = list(site.hits)
        second = await run_operation(
            "kb_population", params, settings=settings, store=store, checkpoint=first.checkpoint
        )
    assert second.outcome.status is OperationStatus.COMPLETED
    assert [hit for hit in hits_before if hit != "/robots.txt"] == ["/p0", "/p1"]
    again = [hit for hit in site.hits[len(hits_before) :] if hit != "/robots.txt"]
    assert again == ["/p2", "/p3", "/p4"]
    facts = await store.list_facts()
    keys = [(fact.metadata["source"], fact.metadata["chunk"]) for fact in facts]
    assert len(keys) == len(set(keys))  # no fact twice
    assert {source for source, _ in keys} == {f"{base}/p{n}" for n in range(5)}


async def test_a_slow_page_expires_under_kb_fetch(tmp_path: Path) -> None:
    # A server that accepts and never answers: the fetch ends at kb.fetch, not later.
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        install_deadlines(DeadlineTable({"kb.fetch": 0.2}))
        async with Crawler(AddressPolicy(allow_private=True)) as crawler:
            with pytest.raises(DeadlineExceeded) as expired:
                await crawler.fetch(f"http://127.0.0.1:{port}/")
    assert expired.value.scope == "kb.fetch"


async def test_a_first_redirect_moves_the_site(tmp_path: Path, store: Store) -> None:
    site = Site(
        {
            "/": html_page(
                "Home",
                "<article><p>The home page of the moved site.</p></article>"
                "<a href='/next'>next</a>",
            ),
            "/next": html_page(
                "Next", "<article><p>The second page of the moved site.</p></article>"
            ),
        }
    )
    async with serve_site(site) as base:
        port = base.rsplit(":", 1)[1]
        site.pages["/start"] = Answer(status=301, headers=[("location", f"{base}/")])
        result = await crawl(crawl_settings(tmp_path), store, f"http://localhost:{port}/start")
    assert result["site"] == base  # http://127.0.0.1:<port>, no longer localhost
    assert [page["url"] for page in result["pages_listed"]] == [f"{base}/", f"{base}/next"]


async def test_meta_robots_noindex_and_nofollow(tmp_path: Path, store: Store) -> None:
    site = Site(
        {
            "/": Answer(
                b"<html><head><meta name='robots' content='noindex'></head><body><article>"
                b"<p>This hub page must not become a fact.</p></article>"
                b"<a href='/a'>a</a><a href='/b' rel='nofollow'>b</a></body></html>"
            ),
            "/a": Answer(
                b"<html><head><meta name='robots' content='nofollow'></head><body><article>"
                b"<p>Page a is indexed, its links are not followed.</p></article>"
                b"<a href='/c'>c</a></body></html>"
            ),
        }
    )
    async with serve_site(site) as base:
        await crawl(crawl_settings(tmp_path), store, f"{base}/")
    assert [hit for hit in site.hits if hit != "/robots.txt"] == ["/", "/a"]
    assert {fact.metadata["source"] for fact in await store.list_facts()} == {f"{base}/a"}


async def test_https_goes_to_the_checked_address_and_verifies_the_name(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(tmp_path / "cert.pem", append=True)
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    site = Site({"/": html_page("Secure", "<article><p>Served over TLS by name.</p></article>")})
    tls = (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    async with serve_site(site, tls=tls) as base:
        port = base.rsplit(":", 1)[1]
        context = ssl.create_default_context()
        ca.configure_trust(context)
        transport = httpx.AsyncHTTPTransport(verify=context)
        async with Crawler(AddressPolicy(allow_private=True), transport=transport) as crawler:
            page = await crawler.fetch(f"https://localhost:{port}/")
            assert "over TLS by name" in page.text
            # By address the certificate (issued to localhost) does not match: refused.
            with pytest.raises(CrawlFailed, match="ConnectError"):
                await crawler.fetch(f"https://127.0.0.1:{port}/")
    assert site.hosts == [f"localhost:{port}"]
