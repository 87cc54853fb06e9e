"""Which ``Host`` and ``Origin`` headers the server answers: the cross-site policy.

A server on a laptop with no token set is open to two attacks from any web
page the user visits, and a header is the only thing that tells them apart
from the user's own requests:

- *DNS rebinding*: ``evil.example`` re-points its name at 127.0.0.1, and its
  page then reads our answers as same-origin. The browser still sends
  ``Host: evil.example``, a name we never go by.
- *Cross-site WebSockets*: browsers apply no same-origin rule to WebSockets,
  so any page can open ``ws://127.0.0.1:8000/...``. The browser sends the
  page's ``Origin``, and a page can set neither header.

The rules, Jupyter's made explicit. **Host** is checked when the server is
bound to a loopback address, or when ``AUTOBOT_ALLOWED_HOSTS`` lists names
(unset and bound elsewhere, e.g. ``0.0.0.0``, any Host is answered: the names
a LAN or a proxy uses cannot be guessed). Always allowed: ``localhost``, a
loopback IP, and the IP the connection arrived at (an IP involves no DNS, so
no rebinding). A listed ``name`` matches on any port, ``name:port`` on that
port only; ``*`` allows any Host. **Origin** is checked when a request has
one (browsers always send it on a WebSocket handshake and on a cross-site
POST; other clients usually do not): allowed are the same origin (host and
port of the ``Host`` header: a page this server served), on a loopback bind
a loopback name or IP with the port the connection arrived on, and the
origins ``AUTOBOT_ALLOWED_ORIGINS`` lists (``*``: any). ``Origin: null``
(sandboxed frames, ``file://`` pages) is a browser hiding where it came from
and is refused unless ``*`` is set.

Everything here is pure: parsers for the two settings (a bad entry raises the
``ValueError`` whose message :mod:`autobot._config` prints) and
:class:`SitePolicy`, which the API layer asks about each request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ANY", "SitePolicy", "is_loopback", "parse_hosts", "parse_origins"]

ANY = "*"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(name: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _name(text: str) -> str | None:
    """``text`` as a comparable host name (IPs canonical, names lower case), or None."""
    if text.startswith("[") and text.endswith("]"):
        address = _ip(text[1:-1])
        return None if address is None or address.version != 6 else str(address)
    address = _ip(text)
    if address is not None:
        return str(address)
    name = text.lower().removesuffix(".")
    return name if _NAME.fullmatch(name) else None


def _authority(text: str) -> tuple[str, int | None] | None:
    """Split ``name``, ``name:port``, ``[v6]`` or ``[v6]:port``; None when malformed."""
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        host += bracket
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        else:
            port_text = None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    name = _name(host)
    return None if name is None else (name, port)


def _origin(text: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of a serialized origin, default port filled in; None if not one."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        not _SCHEME.fullmatch(scheme)
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or parts.hostname is None
    ):
        return None
    name = _name(f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname)
    if name is None:
        return None
    return scheme, name, port if port is not None else _DEFAULT_PORTS.get(scheme)


def _entries(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"{value!r} is not a comma-separated list")
    entries = [item.strip() for item in items if item.strip()]
    if not entries:
        raise ValueError(f"{value!r} lists nothing")
    return entries


def parse_hosts(value: Any) -> tuple[str, ...]:
    """``AUTOBOT_ALLOWED_HOSTS``: ``name``, ``name:port``, IPs (v6 bracketed or bare), or ``*``."""
    hosts = []
    for entry in _entries(value):
        bare_v6 = _ip(entry)
        if entry == ANY or (bare_v6 is not None and bare_v6.version == 6):
            hosts.append(ANY if entry == ANY else f"[{bare_v6}]")
        elif _authority(entry) is None:
            raise ValueError(f"{entry!r} is not a host (name or name:port, no scheme or path)")
        else:
            hosts.append(entry.lower())
    return tuple(hosts)


def parse_origins(value: Any) -> tuple[str, ...]:
    """``AUTOBOT_ALLOWED_ORIGINS``: ``scheme://host[:port]`` entries, or ``*``."""
    origins = []
    for entry in _entries(value):
        if entry != ANY and _origin(entry) is None:
            raise ValueError(f"{entry!r} is not an origin (scheme://host[:port], no path)")
        origins.append(entry if entry == ANY else entry.lower().rstrip("/"))
    return tuple(origins)


def _loopback_name(name: str) -> bool:
    address = _ip(name)
    return name == "localhost" if address is None else address.is_loopback


def is_loopback(bind_host: str) -> bool:
    """Whether a listen address (``127.0.0.1``, ``::1``, ``localhost``, ...) is loopback only."""
    name = _name(bind_host.strip())
    return name is not None and _loopback_name(name)


def _same_host(a: str, b: str | None) -> bool:
    return b is not None and _name(b) == a


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """The allowed Hosts and Origins of one server; see the module's docstring.

    Build it with :meth:`for_server`. ``local`` arguments are the address and
    port the connection arrived at (the ASGI scope's ``server``), so the rules
    hold for a port chosen at bind time (port 0) and for every bound address.
    """

    check_hosts: bool
    hosts: frozenset[tuple[str, int | None]]
    loopback: bool
    any_origin: bool
    origins: frozenset[tuple[str, str, int | None]]

    @classmethod
    def for_server(
        cls, bind_host: str, allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = ()
    ) -> SitePolicy:
        """The policy for a server listening on ``bind_host`` with the two settings' values."""
        loopback = is_loopback(bind_host)
        hosts = {_authority(entry) for entry in allowed_hosts if entry != ANY}
        # The name the server was told to listen on is one it goes by, unless it
        # is a wildcard address (0.0.0.0, ::), which no client should put in Host.
        bound = _name(bind_host.strip())
        bound_ip = None if bound is None else _ip(bound)
        if bound is not None and not (bound_ip is not None and bound_ip.is_unspecified):
            hosts.add((bound, None))
        return cls(
            check_hosts=ANY not in allowed_hosts and (loopback or bool(allowed_hosts)),
            hosts=frozenset(host for host in hosts if host is not None),
            loopback=loopback,
            any_origin=ANY in allowed_origins,
            origins=frozenset(
                origin
                for origin in (_origin(entry) for entry in allowed_origins if entry != ANY)
                if origin is not None
            ),
        )

    def host_allowed(self, host: str | None, local: tuple[str, int] | None = None) -> bool:
        """Whether a request with this ``Host`` header is answered (none or empty: yes)."""
        if not self.check_hosts or host is None or not host.strip():
            return True  # HTTP/1.0 without Host (Quart fills in an empty one): no browser
        authority = _authority(host)
        if authority is None:
            return False
        name, port = authority
        if _loopback_name(name) or (local is not None and _same_host(name, local[0])):
            return True
        return (name, None) in self.hosts or (port is not None and (name, port) in self.hosts)

    def origin_allowed(
        self, origin: str, host: str | None, local: tuple[str, int] | None = None
    ) -> bool:
        """Whether a request with this ``Origin`` (present) and ``Host`` is answered."""
        if self.any_origin:
            return True
        parsed = _origin(origin)
        if parsed is None:
            return False  # "null", or not an origin at all
        scheme, name, port = parsed
        if host is not None:
            authority = _authority(host)
            if authority is not None:
                host_name, host_port = authority
                if host_port is None:
                    host_port = _DEFAULT_PORTS.get(scheme)
                if (host_name, host_port) == (name, port):
                    return True  # the same origin: a page this server served
        if (
            self.loopback
            and local is not None
            and port == local[1]
            and (_loopback_name(name) or _same_host(name, local[0]))
        ):
            return True
        return parsed in self.origins

    def describe(self) -> Iterable[str]:
        """Two short lines for the configuration summary."""
        if not self.check_hosts:
            yield "hosts       any"
        else:
            extra = sorted(_display(n, p) for n, p in self.hosts if not _loopback_name(n))
            yield "hosts       " + ", ".join(["localhost", "loopback IPs", *extra])
        if self.any_origin:
            yield "origins     any"
        else:
            listed = sorted(
                f"{s}://{_display(n, None if p == _DEFAULT_PORTS.get(s) else p)}"
                for s, n, p in self.origins
            )
            yield "origins     " + ", ".join(["same origin", *listed])


def _display(name: str, port: int | None) -> str:
    host = f"[{name}]" if ":" in name else name
    return host if port is None else f"{host}:{port}"
