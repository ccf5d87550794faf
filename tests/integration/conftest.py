"""Fixtures shared by the integration tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.engine import Database, migrate
from storage.sealing import Sealer
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


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database with a fresh data key, and no server: for the parts that run
    on their own (dispatcher, pruner, daily summary)."""
    db = Database(database_url, Sealer(secrets.token_bytes(32)))
    await migrate(db.engine)
    try:
        yield db
    finally:
        await db.dispose()
