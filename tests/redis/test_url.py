"""``parse_redis_url``: the three URL modes, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autobot.redis import Endpoint, TLSOptions, parse_redis_url


def test_single_url_with_credentials_and_database() -> None:
    url = parse_redis_url("redis://bot:s%40cret@cache.local:6380/3")
    assert url.mode == "single"
    assert url.endpoints == (Endpoint("cache.local", 6380),)
    assert (url.username, url.password, url.db) == ("bot", "s@cret", 3)
    assert "s@cret" not in str(url) and "***" in str(url)


def test_defaults_and_db_query_parameter() -> None:
    assert parse_redis_url("redis://localhost").endpoints == (Endpoint("localhost", 6379),)
    assert parse_redis_url("redis://localhost?db=5").db == 5
    assert parse_redis_url("redis://[::1]:7000/1").endpoints == (Endpoint("::1", 7000),)


def test_failover_list_keeps_order() -> None:
    url = parse_redis_url("redis://a:1/2, redis://b:2/2 ,redis://c/2".replace(" ", ""))
    assert url.mode == "failover"
    assert [str(endpoint) for endpoint in url.endpoints] == ["a:1", "b:2", "c:6379"]
    assert url.db == 2


def test_tls_urls_with_redis_py_option_names() -> None:
    url = parse_redis_url(
        "rediss://:pw@cache.example.com:6380/2?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem"
        "&ssl_keyfile=/k.pem&ssl_cert_reqs=optional&ssl_check_hostname=false"
    )
    assert url.mode == "single" and url.db == 2
    assert url.tls == TLSOptions(
        ca_certs="/etc/ca.pem",
        certfile="/c.pem",
        keyfile="/k.pem",
        cert_reqs="optional",
        check_hostname=False,
    )
    assert str(url) == "rediss://:***@cache.example.com:6380/2"
    # Defaults: verify the certificate and the host name, with the system's CAs.
    plain = parse_redis_url("rediss://cache.example.com")
    assert plain.tls == TLSOptions() and plain.tls.cert_reqs == "required"
    assert plain.tls.check_hostname and plain.endpoints[0].port == 6379
    assert parse_redis_url("redis://cache.example.com").tls is None
    # No verification means no host name check either (as in redis-py).
    assert not parse_redis_url("rediss://h?ssl_cert_reqs=none").tls.check_hostname  # type: ignore[union-attr]
    assert parse_redis_url("rediss://h?ssl_ca_path=/etc/ssl/certs").tls.ca_path == "/etc/ssl/certs"  # type: ignore[union-attr]


def test_tls_failover_lists_and_sentinels() -> None:
    url = parse_redis_url("rediss://a:1/0?ssl_ca_certs=/ca.pem,rediss://b:2/0?ssl_ca_certs=/ca.pem")
    assert url.mode == "failover" and url.tls == TLSOptions(ca_certs="/ca.pem")
    sentinel = parse_redis_url("rediss+sentinel://s1:26380,s2/mymaster/1?ssl_ca_certs=/ca.pem")
    assert sentinel.mode == "sentinel" and sentinel.service_name == "mymaster"
    assert sentinel.db == 1 and sentinel.tls == TLSOptions(ca_certs="/ca.pem")
    assert str(sentinel).startswith("rediss+sentinel://")
    assert parse_redis_url("redis+sentinel://s1/mymaster").tls is None


def test_sentinel_url() -> None:
    url = parse_redis_url("redis+sentinel://:pw@s1:26379,s2,s3:5000/mymaster/4")
    assert url.mode == "sentinel"
    assert url.service_name == "mymaster"
    assert url.endpoints == (Endpoint("s1", 26379), Endpoint("s2", 26379), Endpoint("s3", 5000))
    assert (url.password, url.db) == ("pw", 4)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("http://host", "redis://"),
        ("redis://host?ssl_ca_certs=/ca.pem", "needs a rediss:// URL"),
        ("rediss://host?ssl_cert_reqs=maybe", "none, optional or required"),
        ("rediss://host?ssl_check_hostname=perhaps", "not true or false"),
        ("rediss://host?ssl_keyfile=/k.pem", "needs ssl_certfile"),
        ("rediss://host?ssl_ciphers=ALL", "not supported"),
        ("redis://a:1/0,rediss://b:2/0", "TLS settings"),
        ("redis+sentinel://s1/name?ssl_certfile=/c.pem", "rediss://"),
        ("redis://host:99999", "port"),
        ("redis://host:abc", "port"),
        ("redis://host/x", "database"),
        ("redis://a:1/0,b:2", "full redis:// URL"),
        ("redis://a:1/0,redis://b:2/1", "same database"),
        ("redis://a:1/0,redis://a:1/0", "twice"),
        ("redis+sentinel://s1:26379", "service name"),
        ("redis+sentinel://s1/a/b/c", "service_name"),
        ("redis://:hunter2@host:bad", "port"),
    ],
)
def test_invalid_urls_raise_one_line_value_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_redis_url(text)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message
    assert "hunter2" not in message


def test_settings_load_without_the_redis_client() -> None:
    # The parser is on the ground floor: validating AUTOBOT_REDIS_URL must not
    # import redis-py or autobot.redis (a fresh interpreter shows what loads).
    code = (
        "import sys, autobot._config\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'hiredis')"
        " or m.startswith('autobot.redis'))\n"
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert result.stdout.strip() == ""


def test_the_client_package_reexports_the_parser() -> None:
    from autobot import _redis_url

    assert parse_redis_url is _redis_url.parse_redis_url
    assert Endpoint is _redis_url.Endpoint
