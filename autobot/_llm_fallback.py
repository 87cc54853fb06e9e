"""``AUTOBOT_LLM_FALLBACK``: the providers to try, in order, when the primary is out.

A pure parser on the ground floor (the settings loader imports it without
loading httpx); ``autobot.llm`` re-exports its names.

The value is a comma-separated list of ``provider:url:model`` entries::

    openai:http://10.0.0.5:8080/v1:qwen2,ollama:http://127.0.0.1:11434:llama3.2

The URL has colons of its own, so an entry is read by its shape rather than
split on colons: the provider is what comes before the first colon, then an
``http://`` or ``https://`` URL (host, optional port, optional path), and the
model is everything after the colon that ends the URL. A model may therefore
carry an Ollama tag (``ollama:http://h:11434:llama3.2:latest``); a URL path
may not contain a colon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["PROVIDER_KINDS", "FallbackSpec", "parse_fallback"]

PROVIDER_KINDS = ("ollama", "openai")

# The port is taken possessively (?+): "http://h:8080" with no model must not
# be read as host "h" and model "8080".
_URL_THEN_MODEL = re.compile(
    r"(?P<url>https?://(?:\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]@]+)(?::\d+(?=[:/]|$))?+(?:/[^\s:]*)?+)"
    r":(?P<model>\S+)",
    re.IGNORECASE,
)
_EXAMPLE = "ollama:http://127.0.0.1:11434:llama3.2"


@dataclass(frozen=True, slots=True)
class FallbackSpec:
    """One fallback provider: its kind (``ollama`` or ``openai``), base URL and model."""

    provider: str
    url: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.url}:{self.model}"


def parse_fallback(value: str) -> tuple[FallbackSpec, ...]:
    """Parse the fallback list; an empty or blank value is an empty list.

    Raises ``ValueError`` with a one-line message naming the first bad entry,
    for the settings loader to report against the variable that held it.
    """
    if not value.strip():
        return ()
    return tuple(_parse_entry(entry.strip()) for entry in value.split(","))


def _parse_entry(entry: str) -> FallbackSpec:
    if not entry:
        raise ValueError("an entry is empty (two commas in a row, or a comma at an end)")
    provider, colon, rest = entry.partition(":")
    if not colon or not rest:
        raise ValueError(f"{entry!r} is not provider:url:model (e.g. {_EXAMPLE})")
    provider = provider.strip().lower()
    if provider not in PROVIDER_KINDS:
        raise ValueError(
            f"{entry!r} names provider {provider!r}; expected one of {', '.join(PROVIDER_KINDS)}"
        )
    if not rest.lower().startswith(("http://", "https://")):
        raise ValueError(f"{entry!r} has no http:// or https:// URL after {provider + ':'!r}")
    match = _URL_THEN_MODEL.fullmatch(rest)
    if match is None:
        raise ValueError(f"{entry!r} has no model after the URL (e.g. {_EXAMPLE})")
    url = match["url"].rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(f"{entry!r} has an invalid URL {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"{entry!r} has a URL without a host: {url!r}")
    return FallbackSpec(provider, url, match["model"])
