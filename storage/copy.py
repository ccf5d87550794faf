"""Copying a whole Duka database into an empty one, value for value: ``duka copy-db``.

The rows are copied as stored. Sealed columns (``storage.sealing``) are read and written
through a *raw* copy of each table, whose sealed columns have their plain storage type
(``String``/``Text``): the sealed text passes through unopened, so the copy needs no data
key and cannot seal twice, and the copy opens with exactly the keys the source opens with
(including values still sealed with ``DUKA_DATA_KEY_OLD``). ``UtcDateTime`` and
``Boolean`` keep their types, which translate SQLite's storage to PostgreSQL's and back.

The source is read in one read-only transaction (a snapshot: SQLite ``BEGIN`` in WAL
mode, PostgreSQL ``REPEATABLE READ READ ONLY``) and never written; a SQLite file is
opened ``mode=ro``. The target is written in one transaction: a failure leaves it as
empty as it was. Tables go in dependency order (``metadata.sorted_tables``), so foreign
keys hold at every insert; on PostgreSQL each ``id`` sequence is then moved past the
copied ids, so the next order does not collide with a copied one.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeEngine

from storage.backup import LOCK_SUFFIX, sqlite_file
from storage.schema import metadata, processes
from storage.schema_version import CODE_HEADS, stored_heads
from storage.sealing import SealedText, SealedValue, Sealer

BATCH_ROWS = 1000  # rows per INSERT: bounded memory, few round trips


class CopyRefused(Exception):
    """Nothing was copied; ``str(exc)`` says why (one line)."""


class NoSealing(Sealer):
    """The target engine's "key": the copy never seals or opens anything, and this proves
    it (an engine needs a sealer installed only because migration 0008 asks for one)."""

    def __init__(self) -> None:
        super().__init__(bytes(32))

    def seal_value(self, value: str) -> str:
        raise RuntimeError("duka copy-db copies sealed values as stored; nothing is sealed")

    def open_value(self, stored: str) -> str:
        raise RuntimeError("duka copy-db copies sealed values as stored; nothing is opened")

    def seal_text(self, text: str) -> str:
        raise RuntimeError("duka copy-db copies sealed values as stored; nothing is sealed")

    def open_text(self, stored: str) -> str:
        raise RuntimeError("duka copy-db copies sealed values as stored; nothing is opened")


def raw_table(table: Table, into: MetaData) -> Table:
    """``table`` with its sealed columns typed as what they store (sealed text)."""
    return Table(
        table.name,
        into,
        *(Column(c.name, _stored_type(c.type), primary_key=c.primary_key) for c in table.columns),
    )


def _stored_type(kind: TypeEngine[Any]) -> TypeEngine[Any]:
    # Only the sealing types: UtcDateTime is a TypeDecorator too, and is wanted.
    return kind.impl_instance if isinstance(kind, SealedValue | SealedText) else kind


def source_engine(url: str) -> AsyncEngine:
    """An engine for reading ``url`` (see ``read_snapshot``); a SQLite file is opened
    read-only."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, hide_parameters=True)
    database = Path(parsed.database or "").resolve()
    # uri=true + mode=ro: a mistyped path fails instead of creating an empty database.
    engine = create_async_engine(
        parsed.set(database=f"file:{database}", query={"mode": "ro", "uri": "true"}),
        hide_parameters=True,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # The driver would begin no transaction for SELECTs: each table would be read at
        # its own moment. A deferred BEGIN holds one read snapshot (WAL) and no write lock.
        conn.exec_driver_sql("BEGIN")

    return engine


@contextlib.asynccontextmanager
async def read_snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in one read-only transaction: a table copied last agrees with one
    copied first."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        async with conn.begin():
            yield conn


@contextlib.contextmanager
def no_server_on(url: str) -> Iterator[None]:
    """Hold ``url``'s server lock exclusively (SQLite; nothing for PostgreSQL): refuse while
    a ``duka serve`` has the file open, and keep one from starting until the copy ends."""
    database = sqlite_file(url)
    if database is None:
        yield
        return
    lock_file = database.with_name(database.name + LOCK_SUFFIX)
    with lock_file.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CopyRefused(f"a duka server is running on {database}") from None
        yield  # closing the file releases the lock


def schema_refusal(conn: Connection) -> str | None:
    """Why the source cannot be copied as it is (its schema is not this code's), or None."""
    stored = stored_heads(conn)
    if stored == CODE_HEADS:
        return None
    head = ", ".join(sorted(CODE_HEADS))
    if not stored:
        return "it is not a Duka database (no schema revision is recorded in it)"
    at = ", ".join(sorted(stored))
    if stored <= known_revisions():
        return f"its schema is at revision {at}, older than this version's {head}"
    return f"its schema is at revision {at}, made by a newer Duka (this one is at {head})"


def known_revisions() -> frozenset[str]:
    # Imported here: only copy-db and restore need it, and Alembic costs ~11 MB resident.
    from alembic.script import ScriptDirectory

    from storage.engine import MIGRATIONS_DIR

    return frozenset(s.revision for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions())


def live_servers(conn: Connection, seen_since: datetime) -> int:
    """How many ``duka serve`` processes registered in this database were seen lately."""
    seen = select(func.count()).select_from(processes).where(processes.c.seen_at >= seen_since)
    return int(conn.execute(seen).scalar_one())


# What only running servers write, about themselves (their registrations, leases, the
# Daraja token they share): not the shop's data, and stale in a copy.
RUNTIME_TABLES = frozenset({"processes", "leases", "daraja_tokens"})


def occupied_tables(conn: Connection) -> list[str]:
    """The shop's tables that exist in ``conn``'s database and hold at least one row."""
    present = set(inspect(conn).get_table_names())
    return [
        table.name
        for table in metadata.sorted_tables
        if table.name in present and conn.execute(select(1).select_from(table).limit(1)).first()
    ]


async def copy_tables(
    source: AsyncConnection, target: AsyncConnection, copied: Callable[[str, int], None]
) -> dict[str, int]:
    """Every table of the schema from ``source`` to ``target`` (in their transactions);
    ``copied(table, rows)`` after each. The row count of each table, by name."""
    raw = MetaData()
    counts: dict[str, int] = {}
    for table in metadata.sorted_tables:
        if table.name in RUNTIME_TABLES:
            continue
        stored = raw_table(table, raw)
        order = list(stored.primary_key.columns)
        rows = await source.stream(select(stored).order_by(*order))
        count = 0
        async for batch in rows.partitions(BATCH_ROWS):
            await target.execute(insert(stored), [row._asdict() for row in batch])
            count += len(batch)
        counts[table.name] = count
        copied(table.name, count)
    if target.dialect.name == "postgresql":
        await target.run_sync(reset_id_sequences)
    return counts


def reset_id_sequences(conn: Connection) -> None:
    """Move each integer ``id`` sequence to the highest copied id (PostgreSQL): rows copied
    with their ids leave the sequences at 1, and the next insert would collide."""
    for table in metadata.sorted_tables:
        primary = list(table.primary_key.columns)
        if [c.name for c in primary] != ["id"] or not isinstance(primary[0].type, Integer):
            continue
        name = conn.dialect.identifier_preparer.quote(table.name)
        # setval is strict: on an empty table max(id) is NULL and the sequence stays as is.
        conn.execute(
            select(
                func.setval(func.pg_get_serial_sequence(name, "id"), func.max(text("id")))
            ).select_from(text(name))
        )


def count_rows(conn: Connection) -> dict[str, int]:
    """Each table's row count (the copy checks itself with it before committing)."""
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in metadata.sorted_tables
        if table.name not in RUNTIME_TABLES
    }
