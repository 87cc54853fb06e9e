"""Choosing and opening the backend the settings ask for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .._config import Settings
from .._supervisor import Supervisor
from ._embedded import open_embedded_store
from ._interface import Store

__all__ = ["open_store", "store_directory", "store_is_critical"]


def store_directory(settings: Settings) -> Path:
    """Where the embedded backend keeps its journal and snapshots."""
    return settings.data_dir / "store"


def store_is_critical(settings: Settings) -> bool:
    """Whether this process can serve at all while its store cannot be opened or written.

    True for the embedded store, which lives in the data dir: without it
    nothing is stored. With Redis the data dir only holds files, and losing it
    (or Redis, which comes back by itself) degrades the service rather than
    stopping it. The one place above the backends that needs to know.
    """
    return not settings.redis_url


@asynccontextmanager
async def open_store(
    settings: Settings, *, supervisor: Supervisor | None = None
) -> AsyncIterator[Store]:
    """The Redis backend when ``AUTOBOT_REDIS_URL`` is set, else the embedded one.

    The store's background tasks (journal writer and compaction, or the
    pub/sub relay) run under ``supervisor``; without one, under the block's own.
    """
    if settings.redis_url:
        # Here, not at the top: the redis package costs start-up ~0.1 s, and the
        # embedded default never needs it.
        from ..redis import open_redis
        from ._redis_store import open_redis_store

        async with open_redis(settings.redis_url, decode_responses=True) as client:
            async with open_redis_store(client, supervisor=supervisor) as store:
                yield store
    else:
        async with open_embedded_store(store_directory(settings), supervisor=supervisor) as store:
            yield store
