"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import RunningDuka
from tests.integration.test_conversation import open_shop


@pytest.fixture
async def shop(database_url: str, tmp_path: Path) -> AsyncIterator[RunningDuka]:
    """Duka with the three-product catalog, on SQLite and on PostgreSQL."""
    duka, runner = await open_shop(database_url, tmp_path)
    try:
        yield duka
    finally:
        await runner.cleanup()
