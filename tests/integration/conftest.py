"""Fixtures shared by the integration tests."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
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


@contextlib.asynccontextmanager
async def databases_on(url: str) -> AsyncIterator[Callable[[], Database]]:
    """Opens as many ``Database`` objects on the (migrated) database at ``url`` as asked, one
    per process a test stands for, all with one data key; closes them at the end."""
    sealer = Sealer(secrets.token_bytes(32))
    opened: list[Database] = []

    def open_one() -> Database:
        opened.append(Database(url, sealer))
        return opened[-1]

    await migrate(open_one().engine)
    try:
        yield open_one
    finally:
        for database in opened:
            await database.dispose()


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[Callable[[], Database]]:
    """``databases_on`` each kind of database."""
    async with databases_on(database_url) as open_one:
        yield open_one
