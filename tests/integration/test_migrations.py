"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import String

from storage.engine import MIGRATIONS_DIR, create_engine, migrate
from storage.schema import metadata
from storage.schema_version import CODE_HEADS, stored_heads
from storage.sealing import SealedValue, Sealer, generate_key, parse_key


async def test_migrations_match_the_declared_schema(database_url: str) -> None:
    engine = create_engine(database_url, Sealer(parse_key(generate_key())))
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(stored_heads) == frozenset()
        await migrate(engine)
        await migrate(engine)  # a second start-up finds nothing to do
        async with engine.connect() as conn:
            assert await conn.run_sync(stored_heads) == CODE_HEADS
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


def test_the_head_constant_is_the_newest_migration() -> None:
    # storage/schema_version.py states the head so that start-up need not import Alembic.
    heads = frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())
    assert heads == CODE_HEADS, f"set CODE_HEADS in storage/schema_version.py to {set(heads)}"


def _only_a_varchar_length(difference: Any) -> bool:
    """A type difference between two VARCHARs (of any length)."""
    [change] = difference if isinstance(difference, list) else [difference]
    if change[0] != "modify_type":
        return False
    existing, declared = change[5], change[6]
    return isinstance(existing, String) and isinstance(declared, String | SealedValue)
