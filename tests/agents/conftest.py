"""The ``store`` fixture: every bus test runs once per backend."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from autobot.storage import Store
from tests.support.stores import BACKENDS, backend_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    async with backend_store(request, tmp_path) as opened:
        yield opened
