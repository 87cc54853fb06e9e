"""AutoBot: an AI assistant backend on Trio.

The public surface is what this module re-exports; every implementation module
is private. See ``docs/architecture.md`` for how the layers fit together.
"""

import sys as _sys

# httpx imports its command-line client (rich, click, pygments: ~70 modules,
# several MiB and tens of milliseconds) whenever it is imported, and falls back
# to a stub ``httpx.main`` when that import fails. A server process never runs
# the httpx command line, so it is kept out before anything imports httpx.
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]

from ._breaker import BreakerState, CircuitBreaker
from ._config import ConfigError, Settings, load_settings
from ._deadlines import (
    SCOPES,
    DeadlineTable,
    ScopeSpec,
    UnknownDeadlineScope,
    current_deadlines,
    deadline,
    install_deadlines,
    phased_deadline,
    suggest_budget,
)
from ._errors import (
    AutoBotError,
    BadRequest,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    LLMError,
    LLMFailure,
    LLMTimeout,
    LLMUnavailable,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RedisTimeout,
    RedisUnavailable,
    RequestTimeout,
    ServiceUnavailable,
    StorageUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
    ValidationFailed,
    echo,
)
from ._health import DataDirCheck, HealthCheck, HealthReport, run_health_checks

__version__ = "0.1.0"

__all__ = [
    "SCOPES",
    "AutoBotError",
    "BadRequest",
    "BreakerState",
    "CircuitBreaker",
    "ConfigError",
    "Conflict",
    "DataDirCheck",
    "DeadlineExceeded",
    "DeadlineTable",
    "Forbidden",
    "HealthCheck",
    "HealthReport",
    "LLMError",
    "LLMFailure",
    "LLMTimeout",
    "LLMUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RedisTimeout",
    "RedisUnavailable",
    "RequestTimeout",
    "ScopeSpec",
    "ServiceUnavailable",
    "Settings",
    "StorageUnavailable",
    "Unauthorized",
    "UnknownDeadlineScope",
    "UnsupportedMediaType",
    "UpstreamError",
    "ValidationFailed",
    "current_deadlines",
    "deadline",
    "echo",
    "install_deadlines",
    "load_settings",
    "phased_deadline",
    "run_health_checks",
    "suggest_budget",
]
