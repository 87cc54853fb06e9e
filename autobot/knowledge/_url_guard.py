"""Which URLs a crawl may fetch: ``http``/``https`` to public addresses only.

The server fetching pages for a client must not become a way into its own
network (SSRF). A URL is allowed when its scheme is ``http`` or ``https`` and
**every** address its host resolves to is public: none loopback, private,
link-local, unspecified, multicast, reserved or otherwise not global
(``ipaddress``'s ``is_global``; an IPv4-mapped IPv6 address is judged as the
IPv4 address it carries). One bad address refuses the URL, so a name that
resolves to a public and a private address cannot be used to reach the
private one.

The check returns the address it checked, and the crawler connects to that
address (:mod:`._crawl` sends the request to the IP, with the name in the
``Host`` header and as the TLS server name): a DNS answer that changes between
the check and the connect (DNS rebinding) cannot move the connection.

:class:`AddressPolicy` says what is allowed; ``allow_private`` (the
``AUTOBOT_CRAWL_ALLOW_PRIVATE`` setting) lets every address through, and
``also_allowed`` lets some networks through (for tests that serve a site on
one loopback address and check that another one is refused).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import trio

from .._deadlines import deadline
from .._errors import ValidationFailed

__all__ = ["AddressPolicy", "allowed_address", "check_url", "parse_url", "url_not_allowed"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The longest URL a crawl takes.
MAX_URL_CHARS = 2048
_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The addresses a crawl may connect to: public ones, or any with ``allow_private``."""

    allow_private: bool = False
    also_allowed: Sequence[IPNetwork] = ()

    def allows(self, address: IPAddress) -> bool:
        if self.allow_private:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.also_allowed):
            return True
        return address.is_global and not address.is_multicast


def url_not_allowed(url: str, why: str) -> ValidationFailed:
    """422 ``url_not_allowed`` naming the URL and the reason."""
    return ValidationFailed(
        f"{url[:200]!r} cannot be crawled: {why}",
        code="url_not_allowed",
        fields=[{"field": "url", "message": why}],
    )


def parse_url(url: str) -> httpx.URL:
    """``url`` parsed, if it is an absolute ``http``/``https`` URL with a host; else 422."""
    if len(url) > MAX_URL_CHARS:
        raise url_not_allowed(url, f"longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise url_not_allowed(url, f"not a valid URL ({error})") from None
    if parsed.scheme not in _SCHEMES:
        raise url_not_allowed(url, "only http and https URLs can be crawled")
    if not parsed.host:
        raise url_not_allowed(url, "the URL has no host")
    if parsed.userinfo:
        raise url_not_allowed(url, "URLs with a user name or password are not crawled")
    return parsed


async def allowed_address(url: httpx.URL, policy: AddressPolicy) -> str:
    """The address to connect to for ``url``, once every address of its host is allowed.

    Resolves the host (a literal address stands for itself); 422
    ``url_not_allowed`` when it does not resolve or any address is refused.
    Runs under the caller's deadline (``kb.fetch``).
    """
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        answers = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # socket.gaierror: no such name
        raise url_not_allowed(str(url), f"the host {host!r} does not resolve ({error})") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise url_not_allowed(str(url), f"the host {host!r} has no address")
    for address in addresses:
        if not policy.allows(address):
            kind = "loopback, private, link-local or otherwise not public"
            raise url_not_allowed(
                str(url),
                f"the host {host!r} resolves to {address}, a {kind} address "
                "(AUTOBOT_CRAWL_ALLOW_PRIVATE=1 allows it)",
            )
    return str(addresses[0])


async def check_url(url: str, policy: AddressPolicy) -> httpx.URL:
    """``url`` parsed and its host checked, under ``kb.fetch``; 422 ``url_not_allowed`` if not."""
    parsed = parse_url(url)
    with deadline("kb.fetch"):
        await allowed_address(parsed, policy)
    return parsed
