"""Fixtures for the LLM layer's tests (the ``fake_llm`` server comes from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["ollama", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    """Run a test once per provider format."""
    return request.param
