"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import String

from storage.engine import create_engine, migrate
from storage.schema import metadata
from storage.sealing import SealedValue, Sealer, generate_key, parse_key


async def test_migrations_match_the_declared_schema(database_url: str) -> None:
    engine = create_engine(database_url, Sealer(parse_key(generate_key())))
    try:
        await migrate(engine)
        await migrate(engine)  # a second start-up finds nothing to do
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        if engine.dialect.name == "sqlite":
            # SQLite ignores VARCHAR lengths, so 0008 widens the sealed columns only on
            # PostgreSQL (widening on SQLite would rebuild tables that others refer to).
            diff = [d for d in diff if not _only_a_varchar_length(d)]
        assert diff == []
    finally:
        await engine.dispose()


def _only_a_varchar_length(difference: Any) -> bool:
    """A type difference between two VARCHARs (of any length)."""
    [change] = difference if isinstance(difference, list) else [difference]
    if change[0] != "modify_type":
        return False
    existing, declared = change[5], change[6]
    return isinstance(existing, String) and isinstance(declared, String | SealedValue)
