"""Databases: SQLite (WAL) by default, PostgreSQL to scale; start-up migration.

``Database.transaction(fn, ...)`` is the one way the payments code runs a transaction:
``fn`` is plain blocking SQLAlchemy code that receives a ``Connection``. On PostgreSQL it
runs on the async engine (asyncpg) through ``run_sync``. On SQLite it runs, whole, in
one dedicated writer thread with a blocking connection: aiosqlite would otherwise hop
to its thread and back to the event loop for every cursor call (about 70 wake-ups for
a batch of callbacks), and the event loop is what limits the callback path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.schema_version import CODE_HEADS, stored_heads
from storage.sealing import Sealer, install

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
WRITER_SWITCH_INTERVAL = 0.001  # seconds

P = ParamSpec("P")
T = TypeVar("T")


def create_engine(url: str, sealer: Sealer) -> AsyncEngine:
    """An async engine; on SQLite every transaction takes the write lock up front.
    ``sealer`` holds the data key its sealed (phone number) columns use."""
    parsed = make_url(url)
    # hide_parameters: error messages would otherwise quote phone numbers and raw bodies.
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_pre_ping=True, hide_parameters=True)
    else:
        _make_parent_directory(parsed.database)
        engine = create_async_engine(url, hide_parameters=True)
        _configure_sqlite(engine.sync_engine)
    install(engine.sync_engine.dialect, sealer)
    return engine


def _make_parent_directory(database: str | None) -> None:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves instead of the driver's implicit, deferred one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a callback we acknowledged must survive a power cut, since Daraja never resends.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN. A deferred transaction that reads and
        # then writes can fail at once with SQLITE_BUSY when another writer got there
        # first; waiting for the lock up front makes busy_timeout apply instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: str, sealer: Sealer) -> None:
        self.engine = create_engine(url, sealer)
        self._blocking: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            blocking_url = parsed.set(drivername="sqlite+pysqlite")
            self._blocking = create_blocking_engine(blocking_url, hide_parameters=True)
            _configure_sqlite(self._blocking)
            install(self._blocking.dialect, sealer)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
            # The writer thread and the event loop share the GIL. With Python's default 5 ms
            # switch interval the loop, back from a socket call, can wait that long behind a
            # writer batch; 1 ms keeps it responsive (bench/: about +10% callbacks/s).
            sys.setswitchinterval(min(sys.getswitchinterval(), WRITER_SWITCH_INTERVAL))

    @property
    def is_sqlite(self) -> bool:
        return self._blocking is not None

    async def transaction(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, ...)`` in one transaction: committed if it returns."""
        if self._blocking is None or self._writer is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        blocking = self._blocking

        def run() -> T:
            with blocking.begin() as conn:
                return fn(conn, *args, **kwargs)

        # Shielded: if the caller is cancelled, the transaction still finishes in its
        # thread, and we must not pretend it did not happen.
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._writer, run))

    async def dispose(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown, True)
        if self._blocking is not None:
            self._blocking.dispose()
        await self.engine.dispose()


def _alembic_config(connection: Connection) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_to_head)


_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('duka-migrate', 0))")


def _upgrade_to_head(connection: Connection) -> None:
    if stored_heads(connection) == CODE_HEADS:
        return  # the usual restart: Alembic is not even imported (storage/schema_version.py)
    if connection.dialect.name == "postgresql":
        # Several servers starting at once on an older schema: one migrates, the others
        # wait for it here and then find the schema at head.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended('duka-migrate', 0))")
        )
        if stored_heads(connection) == CODE_HEADS:
            return
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")
