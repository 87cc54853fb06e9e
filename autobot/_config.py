"""Settings: every configurable value, read once at start-up and validated.

Values come from, in rising priority: the defaults below, a TOML file named by
``AUTOBOT_CONFIG``, and ``AUTOBOT_*`` environment variables. Each setting is
named once, in :data:`_FIELDS`, with its parser; the parser's ``ValueError``
message becomes the one line the server prints before exiting with status 2::

    AUTOBOT_PORT: 'abc' is not a port number

The TOML file uses the same names in lower case without the prefix, and a
``[deadlines]`` table keyed by scope name::

    port = 8080
    llm_provider = "openai"

    [deadlines]
    "llm.idle" = 60

    [operations.codebase_indexing]   # any field of a type's timeout profile
    per_item_s = 0.5
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._deadlines import SCOPES, DeadlineTable
from ._llm_fallback import FallbackSpec, parse_fallback
from ._operation_profile import TimeoutProfile, apply_profile_overrides, parse_profile_overrides
from ._redis_url import parse_redis_url
from ._site_policy import SitePolicy, parse_hosts, parse_origins

__all__ = ["ConfigError", "Settings", "load_settings"]

_PREFIX = "AUTOBOT_"
_LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A setting has a value that cannot be used; ``str()`` is the one line to print."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a non-empty string")
    return value.strip()


def _port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a port number") from None
    if isinstance(value, bool) or not 0 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port number (0-65535)")
    return port


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if isinstance(value, bool) or number <= 0:
        raise ValueError(f"{value!r} is not a positive whole number")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a flag (1/0, true/false, yes/no, on/off)")


def _backlog(value: Any) -> int:
    number = _positive_int(value)
    if number > 65535:
        # The kernel caps it anyway (net.core.somaxconn); a bigger number is a typo.
        raise ValueError(f"{value!r} is more than 65535")
    return number


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive number of seconds")
    return seconds


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _http_url(value: Any) -> str:
    text = _text(value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return text


def _redis_urls(value: Any) -> str:
    text = _text(value)
    parse_redis_url(text)  # raises ValueError with a one-line message
    return text


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration of one AutoBot process."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    redis_url: str | None = None
    llm_provider: str = "ollama"
    llm_url: str = "http://127.0.0.1:11434"
    llm_model: str = "llama3.2"
    llm_api_key: str | None = None
    llm_fallback: tuple[FallbackSpec, ...] = ()
    api_token: str | None = None
    max_upload_bytes: int = 104_857_600
    log_level: str = "info"
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    listen_backlog: int = 1024
    operations_concurrency: int = 3
    #: The embedding model on the LLM provider; ``None``: keyword search only.
    embed_model: str | None = None
    #: Facts given to the model for an answer with ``"knowledge": true``.
    kb_context_facts: int = 5
    #: Let crawling reach loopback, private and link-local addresses (tests, home labs).
    crawl_allow_private: bool = False
    deadlines: Mapping[str, float] = field(default_factory=dict)
    #: ``{type: {profile field: value}}`` from the TOML ``[operations.<type>]`` tables.
    operation_profiles: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def timeout_profiles(self) -> dict[str, TimeoutProfile]:
        """Every operation type's effective timeout profile."""
        return apply_profile_overrides(self.operation_profiles)

    def deadline_table(self) -> DeadlineTable:
        """A fresh scope table with this configuration's overrides."""
        return DeadlineTable(self.deadlines)

    def site_policy(self) -> SitePolicy:
        """The Host and Origin checks for this listen address and the allowed lists."""
        return SitePolicy.for_server(self.host, self.allowed_hosts, self.allowed_origins)

    def summary(self) -> list[str]:
        """Lines describing the effective configuration, secrets masked."""
        lines = [
            f"listen      http://{self.host}:{self.port} backlog={self.listen_backlog}",
            f"data dir    {self.data_dir}",
            "storage     "
            + (f"redis {parse_redis_url(self.redis_url)}" if self.redis_url else "embedded"),
            f"llm         {self.llm_provider} {self.llm_url} model={self.llm_model}"
            + (" key=****" if self.llm_api_key else ""),
            *(f"fallback    {spec}" for spec in self.llm_fallback),
            f"api token   {'required' if self.api_token else 'not required'}",
            f"max upload  {self.max_upload_bytes} bytes",
            f"operations  {self.operations_concurrency} at once",
            "knowledge   "
            + (f"embeddings model={self.embed_model}" if self.embed_model else "keyword only")
            + f", {self.kb_context_facts} facts per grounded answer"
            + (", crawling may reach private addresses" if self.crawl_allow_private else ""),
            *self.site_policy().describe(),
        ]
        if self.deadlines:
            overrides = ", ".join(f"{name}={s:g}s" for name, s in sorted(self.deadlines.items()))
            lines.append(f"deadlines   {overrides}")
        for type_name, table in sorted(self.operation_profiles.items()):
            fields_set = ", ".join(f"{key}={value:g}" for key, value in sorted(table.items()))
            lines.append(f"profile     {type_name}: {fields_set}")
        return lines


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "host": _text,
    "port": _port,
    "data_dir": lambda value: Path(_text(value)),
    "redis_url": _redis_urls,
    "llm_provider": _choice("ollama", "openai"),
    "llm_url": _http_url,
    "llm_model": _text,
    "llm_api_key": _text,
    "llm_fallback": lambda value: parse_fallback(_text(value)),
    "api_token": _text,
    "max_upload_bytes": _positive_int,
    "log_level": _choice(*_LOG_LEVELS),
    "allowed_hosts": parse_hosts,
    "allowed_origins": parse_origins,
    "listen_backlog": _backlog,
    "operations_concurrency": _positive_int,
    "embed_model": _text,
    "kb_context_facts": _positive_int,
    "crawl_allow_private": _flag,
}
assert set(_FIELDS) | {"deadlines", "operation_profiles"} == {f.name for f in fields(Settings)}

_DEADLINE_VARS = {spec.env_var: spec.name for spec in SCOPES}

#: ``(shorter, longer, what the longer is)``: scope budgets that must stay in this order,
#: or the settings are refused (a check longer than its answer, a beat longer than its lease).
DEADLINE_ORDER: tuple[tuple[str, str, str], ...] = (
    ("health.check", "health", "health deadline"),
    ("agent.heartbeat", "agent.presence", "agent presence"),
    ("operation.heartbeat", "operation.lease", "operation lease"),
)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{_PREFIX}CONFIG", f"no such file {str(path)!r}") from None
    except OSError as error:
        raise ConfigError(f"{_PREFIX}CONFIG", f"cannot read {str(path)!r}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{_PREFIX}CONFIG", f"{str(path)!r} is not valid TOML: {error}") from None


def _from_toml(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    deadlines: dict[str, float] = {}
    for key, raw in _read_toml(path).items():
        source = f"{path.name}: {key}"
        if key == "deadlines":
            if not isinstance(raw, dict):
                raise ConfigError(source, "must be a table of scope = seconds")
            for scope, seconds in raw.items():
                scope_source = f"{path.name}: deadlines.{scope}"
                if scope not in _DEADLINE_VARS.values():
                    raise ConfigError(scope_source, f"no deadline scope named {scope!r}")
                deadlines[scope] = _parse(scope_source, _seconds, seconds)
        elif key == "operations":
            values["operation_profiles"] = _parse(
                f"{path.name}: operations", parse_profile_overrides, raw
            )
        elif key in _FIELDS:
            values[key] = _parse(source, _FIELDS[key], raw)
        else:
            raise ConfigError(source, "is not a setting")
    if deadlines:
        values["deadlines"] = deadlines
    return values


def _parse(source: str, parser: Callable[[Any], Any], raw: Any) -> Any:
    try:
        return parser(raw)
    except ValueError as error:
        raise ConfigError(source, str(error)) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``) and the TOML file.

    Raises :class:`ConfigError` for the first bad value. Empty variables count
    as unset. An ``AUTOBOT_DEADLINE_*`` variable for a scope that does not exist
    is an error, since it would otherwise be silently ignored.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = environ.get(f"{_PREFIX}CONFIG", "").strip()
    if config_file:
        values.update(_from_toml(Path(config_file)))

    deadlines = dict(values.get("deadlines", {}))
    for variable, raw in environ.items():
        if not variable.startswith(_PREFIX) or not raw.strip():
            continue
        key = variable.removeprefix(_PREFIX).lower()
        if key in _FIELDS:
            values[key] = _parse(variable, _FIELDS[key], raw)
        elif variable.startswith(f"{_PREFIX}DEADLINE_"):
            if variable not in _DEADLINE_VARS:
                raise ConfigError(variable, "no deadline scope has this name")
            deadlines[_DEADLINE_VARS[variable]] = _parse(variable, _seconds, raw)
    if deadlines:
        values["deadlines"] = deadlines

    settings = replace(Settings(), **values)
    table = settings.deadline_table()
    for shorter, longer, what in DEADLINE_ORDER:
        short_s, long_s = table.budget(shorter), table.budget(longer)
        if short_s >= long_s:
            variable = next(spec.env_var for spec in SCOPES if spec.name == shorter)
            raise ConfigError(
                variable, f"{short_s:g} s must be shorter than the {what} ({long_s:g} s)"
            )
    return settings
