"""Choosing and opening the backend the settings ask for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .._config import Settings
from ..redis import open_redis
from ._embedded import open_embedded_store
from ._interface import Store
from ._redis_store import open_redis_store

__all__ = ["open_store", "store_directory"]


def store_directory(settings: Settings) -> Path:
    """Where the embedded backend keeps its journal and snapshots."""
    return settings.data_dir / "store"


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The Redis backend when ``AUTOBOT_REDIS_URL`` is set, else the embedded one."""
    if settings.redis_url:
        async with open_redis(settings.redis_url, decode_responses=True) as client:
            async with open_redis_store(client) as store:
                yield store
    else:
        async with open_embedded_store(store_directory(settings)) as store:
            yield store
