"""Parsing ``AUTOBOT_REDIS_URL``: one URL, a failover list, or Sentinels.

Three shapes are accepted, and each selects a mode with its own consistency
trade-off (see ``docs/redis.md``)::

    redis://[user[:password]@]host[:port][/db]                 single
    redis://host-a:6379/0,redis://host-b:6379/0                failover
    redis+sentinel://[user[:password]@]host:port[,host:port]/service[/db]

Each has a TLS form, ``rediss://`` and ``rediss+sentinel://`` (TLS to the
Sentinels and to the nodes they name), taking redis-py's query options:
``ssl_ca_certs`` (a PEM file) and ``ssl_ca_path`` (a directory) to trust
besides the system's CAs, ``ssl_certfile``/``ssl_keyfile`` for a client
certificate, ``ssl_cert_reqs`` (``none``, ``optional``, ``required``, the
default) and ``ssl_check_hostname`` (true by default; always false with
``ssl_cert_reqs=none``)::

    rediss://cache.example.com:6380/0?ssl_ca_certs=/etc/ssl/redis-ca.pem

The parser is pure: it resolves no names and opens no sockets, so the settings
loader can call it to validate the variable and report a one-line error. It
lives on the ground floor, beside the settings, and imports nothing from
``autobot.redis`` or redis-py: loading the settings must not load a Redis
client that a deployment without Redis never uses. ``autobot.redis``
re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Endpoint", "RedisURL", "TLSOptions", "parse_redis_url"]

_DEFAULT_PORT = 6379
_DEFAULT_SENTINEL_PORT = 26379

Mode = Literal["single", "failover", "sentinel"]
CertReqs = Literal["none", "optional", "required"]

_CERT_REQS: tuple[CertReqs, ...] = ("none", "optional", "required")
# redis-py's to_bool reads these as false; we also insist the rest be a yes.
_FALSE_WORDS = frozenset(("0", "f", "false", "n", "no", "off"))
_TRUE_WORDS = frozenset(("1", "t", "true", "y", "yes", "on"))
_TLS_QUERY = (
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How to speak TLS to Redis (and to Sentinels), as the URL's query spells it.

    Paths are as written; the client loads them when it opens, so a missing
    file is reported then (``ValueError``), not here.
    """

    ca_certs: str | None = None
    ca_path: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: CertReqs = "required"
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ``host:port`` as written in the URL (names are resolved later, once)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed Redis URL.

    ``endpoints`` are the Redis nodes in order of preference (``single`` and
    ``failover``) or the Sentinels to ask (``sentinel``, with ``service_name``
    the master's name). ``username``/``password`` and ``db`` apply to every
    Redis node; Sentinels are asked without credentials. ``tls`` is set for
    ``rediss://`` URLs (``None``: plain TCP).
    """

    mode: Mode
    endpoints: tuple[Endpoint, ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    service_name: str | None = None
    tls: TLSOptions | None = None

    def __str__(self) -> str:
        """The URL with the password masked, safe for logs and error messages."""
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        hosts = ",".join(str(endpoint) for endpoint in self.endpoints)
        scheme = "rediss" if self.tls else "redis"
        if self.mode == "sentinel":
            return f"{scheme}+sentinel://{auth}{hosts}/{self.service_name}/{self.db}"
        if self.mode == "failover":
            return ",".join(f"{scheme}://{auth}{endpoint}/{self.db}" for endpoint in self.endpoints)
        return f"{scheme}://{auth}{hosts}/{self.db}"


def _port(text: str | None, default: int, where: str) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{where}: {text!r} is not a port number (1-65535)")
    return int(text)


def _db(path_part: str, query: dict[str, list[str]], where: str) -> int:
    text = query.get("db", [path_part])[-1] or "0"
    if not text.isdigit():
        raise ValueError(f"{where}: database {text!r} is not a whole number")
    return int(text)


def _host_port(netloc: str, default_port: int, where: str) -> Endpoint:
    host, port = netloc, None
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"{where}: unclosed '[' in host {netloc!r}")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{where}: unexpected {rest!r} after host")
            port = rest[1:]
    elif ":" in netloc:
        host, port = netloc.rsplit(":", 1)
    if not host:
        raise ValueError(f"{where}: missing host")
    return Endpoint(host, _port(port, default_port, where))


def _flag(text: str, name: str, where: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"{where}: {name}={text!r} is not true or false")


def _tls_options(query: dict[str, list[str]], tls: bool, where: str) -> TLSOptions | None:
    """The ``ssl_*`` options of a ``rediss`` URL; refused on a plain one."""
    given = {key: values[-1] for key, values in query.items() if key.startswith("ssl_")}
    if not tls:
        if given:
            raise ValueError(f"{where}: {min(given)} needs a rediss:// URL (TLS)")
        return None
    unknown = sorted(set(given) - set(_TLS_QUERY))
    if unknown:
        raise ValueError(
            f"{where}: {unknown[0]} is not supported (TLS options: {', '.join(_TLS_QUERY)})"
        )
    cert_reqs = given.get("ssl_cert_reqs", "required").strip().lower()
    if cert_reqs not in _CERT_REQS:
        raise ValueError(f"{where}: ssl_cert_reqs must be none, optional or required")
    check_hostname = _flag(given.get("ssl_check_hostname", "true"), "ssl_check_hostname", where)
    certfile, keyfile = given.get("ssl_certfile") or None, given.get("ssl_keyfile") or None
    if keyfile and not certfile:
        raise ValueError(f"{where}: ssl_keyfile needs ssl_certfile")
    return TLSOptions(
        ca_certs=given.get("ssl_ca_certs") or None,
        ca_path=given.get("ssl_ca_path") or None,
        certfile=certfile,
        keyfile=keyfile,
        cert_reqs=cert_reqs,  # type: ignore[arg-type]
        check_hostname=check_hostname and cert_reqs != "none",
    )


def _split_auth(netloc: str) -> tuple[str | None, str | None, str]:
    if "@" not in netloc:
        return None, None, netloc
    auth, hosts = netloc.rsplit("@", 1)
    user, sep, password = auth.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None), hosts


def _parse_single(text: str) -> RedisURL:
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{_mask(text)}: expected a redis://, rediss:// or redis+sentinel:// URL")
    username, password, hosts = _split_auth(parts.netloc)
    if "," in hosts:
        raise ValueError(f"{_mask(text)}: list backups as separate URLs, comma-separated")
    endpoint = _host_port(hosts, _DEFAULT_PORT, _mask(text))
    query = parse_qs(parts.query)
    db = _db(parts.path.strip("/"), query, _mask(text))
    tls = _tls_options(query, parts.scheme == "rediss", _mask(text))
    return RedisURL("single", (endpoint,), db, username, password, tls=tls)


def _parse_sentinel(text: str) -> RedisURL:
    parts = urlsplit(text)
    where = _mask(text)
    query = parse_qs(parts.query)
    tls = _tls_options(query, parts.scheme == "rediss+sentinel", where)
    username, password, hosts = _split_auth(parts.netloc)
    sentinels = tuple(
        _host_port(host, _DEFAULT_SENTINEL_PORT, where) for host in hosts.split(",") if host
    )
    if not sentinels:
        raise ValueError(f"{where}: no Sentinel host given")
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ValueError(f"{where}: missing the service name (redis+sentinel://host:port/name)")
    if len(path) > 2:
        raise ValueError(f"{where}: expected /service_name[/db] after the hosts")
    db = _db(path[1] if len(path) == 2 else "", query, where)
    return RedisURL("sentinel", sentinels, db, username, password, unquote(path[0]), tls)


def _mask(text: str) -> str:
    """``text`` with any password replaced by ``***``, for error messages."""
    head, sep, rest = text.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return text
    auth, at, tail = rest.partition("@")
    user, colon, _ = auth.partition(":")
    return f"{head}://{user}{':***' if colon else ''}{at}{tail}"


def parse_redis_url(text: str) -> RedisURL:
    """Parse ``AUTOBOT_REDIS_URL``; raise ``ValueError`` with a one-line message if invalid.

    Several comma-separated ``redis://`` URLs make a failover list: the first
    is the primary, the rest are backups in order. They must agree on database
    and credentials, since they are meant to hold the same data.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the Redis URL is empty")
    text = text.strip()
    if "\n" in text or " " in text:
        raise ValueError("the Redis URL must not contain spaces or line breaks")
    if text.startswith(("redis+sentinel://", "rediss+sentinel://")):
        return _parse_sentinel(text)
    pieces = [piece for piece in text.split(",") if piece]
    if len(pieces) > 1 and not all("://" in piece for piece in pieces):
        raise ValueError(
            f"{_mask(text)}: in a failover list every entry must be a full redis:// URL"
        )
    if not pieces:
        raise ValueError("the Redis URL is empty")
    urls = [_parse_single(piece) for piece in pieces]
    if len(urls) == 1:
        return urls[0]
    first = urls[0]
    for url in urls[1:]:
        if (url.db, url.username, url.password, url.tls) != (
            first.db,
            first.username,
            first.password,
            first.tls,
        ):
            raise ValueError(
                f"{_mask(text)}: all URLs of a failover list must use the same database, "
                "credentials and TLS settings"
            )
    endpoints = tuple(url.endpoints[0] for url in urls)
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"{_mask(text)}: the same endpoint is listed twice")
    return RedisURL("failover", endpoints, first.db, first.username, first.password, tls=first.tls)
