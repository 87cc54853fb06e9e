"""The test kit for pytest-trio tests against AutoBot: real servers, scripted failures.

Installing AutoBot registers a pytest plugin (the ``pytest11`` entry point
``autobot``) with these fixtures, so a test file needs no ``conftest.py``:

- ``fake_llm``: a :class:`FakeLLM`, a real HTTP server speaking Ollama and
  OpenAI, scripted by :class:`Scenario` (tokens, delays, stalls, errors,
  broken streams, HTTP errors, embeddings), recording what it was sent.
- ``redis_server`` / ``redis_processes``: real ``redis-server`` processes
  (:class:`RedisProcess`: freeze, resume, kill).
- ``autobot_app`` / ``autobot_client``: the app with an embedded store in a
  temporary directory, configured by keyword arguments, and an
  :class:`AutoBotClient` calling it over loopback HTTP and WebSocket.
- ``autobot_server``: the real server as a process (:class:`AutoBotServer`),
  for signals, crashes and restarts.
- ``autobot_tmp_path``: the directory the fixtures keep their data in,
  removed after the test.

And helpers to use with them or without: :func:`override_deadlines`,
:func:`eventually`, :func:`serve_app`, :func:`serve_fake_llm`,
:func:`run_autobot_server`. The tutorial is ``docs/testing.md``.
"""

from typing import TYPE_CHECKING, Any

# The names are imported when first used, not with the package: pytest imports
# the plugin (autobot.testing._plugin) in every run of every project that has
# AutoBot installed, and should not pay for httpx, Hypercorn and h11 in a run
# that uses no fixture of the kit.
_MODULES = {
    "AutoBotClient": "_app",
    "ServerEvent": "_app",
    "app_settings": "_app",
    "closed_port_url": "_app",
    "parse_events": "_app",
    "serve_app": "_app",
    "override_deadlines": "_deadlines",
    "FakeLLM": "_fake_llm",
    "Scenario": "_fake_llm",
    "SeenRequest": "_fake_llm",
    "StreamRecord": "_fake_llm",
    "fake_embedding": "_fake_llm",
    "serve_fake_llm": "_fake_llm",
    "eventually": "_polling",
    "RedisProcess": "_redis",
    "RedisProcesses": "_redis",
    "TLSFiles": "_redis",
    "free_port": "_redis",
    "redis_available": "_redis",
    "redis_missing_reason": "_redis",
    "sentinel_master": "_redis",
    "wait_until": "_redis",
    "AutoBotServer": "_server",
    "run_autobot_server": "_server",
    "settings_environ": "_server",
}

if TYPE_CHECKING:
    from ._app import (
        AutoBotClient,
        ServerEvent,
        app_settings,
        closed_port_url,
        parse_events,
        serve_app,
    )
    from ._deadlines import override_deadlines
    from ._fake_llm import (
        FakeLLM,
        Scenario,
        SeenRequest,
        StreamRecord,
        fake_embedding,
        serve_fake_llm,
    )
    from ._polling import eventually
    from ._redis import (
        RedisProcess,
        RedisProcesses,
        TLSFiles,
        free_port,
        redis_available,
        redis_missing_reason,
        sentinel_master,
        wait_until,
    )
    from ._server import AutoBotServer, run_autobot_server, settings_environ


__all__ = [
    "AutoBotClient",
    "AutoBotServer",
    "FakeLLM",
    "RedisProcess",
    "RedisProcesses",
    "Scenario",
    "SeenRequest",
    "ServerEvent",
    "StreamRecord",
    "TLSFiles",
    "app_settings",
    "closed_port_url",
    "eventually",
    "fake_embedding",
    "free_port",
    "override_deadlines",
    "parse_events",
    "redis_available",
    "redis_missing_reason",
    "run_autobot_server",
    "sentinel_master",
    "serve_app",
    "serve_fake_llm",
    "settings_environ",
    "wait_until",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'autobot.testing' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
