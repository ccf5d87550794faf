"""`duka copy-db` moves a shop from SQLite to PostgreSQL whole, and refuses what would lose
or mix data (a target with rows, a source a server still writes, a source not at head).

The shop's data is made by the shop itself: orders paid (and failed) through the real
server and the Daraja simulator, so sealed phone numbers, CheckoutRequestIDs and raw
callback bodies are all in it.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.app import PAYMENTS
from bot.copy_db import copy_db
from storage.copy import RUNTIME_TABLES, count_rows
from storage.engine import Database
from storage.orders import customer_by_chat, recent_orders
from storage.schema import metadata, orders
from storage.sealing import Sealer, parse_key
from tests.conftest import (
    DATA_KEY,
    make_config,
    start_duka,
)
from tests.helpers import make_order, payment_rows, wait_for_payment_status
from tests.integration.test_startup_errors import DUKA, clean_env, one_line

PAYING_PHONE = "254712345678"


@pytest.fixture
async def empty_postgres(postgres_url: str) -> str:
    """This run's PostgreSQL database, emptied (no tables at all)."""
    return postgres_url


@pytest.fixture
async def shop_on_sqlite(sqlite_url: str, tmp_path: Path) -> str:
    """A SQLite database after a paid order, a failed one and one still open."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        config = make_config(sqlite_url, sock.getsockname()[1], tmp_path)
        duka, runner = await start_duka(config, sock)
        try:
            paid = await make_order(duka.engine, chat_id="42")
            await duka.app[PAYMENTS].start_payment(paid.id, "0712 345 678")
            await wait_for_payment_status(duka.engine, paid.id, "paid")
            failed = await make_order(duka.engine, ("Chai", 30, 1), chat_id="43")
            await duka.app[PAYMENTS].start_payment(failed.id, "0712000001")
            await wait_for_payment_status(duka.engine, failed.id, "failed")
            await make_order(duka.engine, ("Maziwa", 60, 2), chat_id="44")
        finally:
            await runner.cleanup()
    return sqlite_url


async def counts_of(url: str) -> dict[str, int]:
    database = Database(url, Sealer(parse_key(DATA_KEY)))
    try:
        return await database.transaction(count_rows)
    finally:
        await database.dispose()


def copy_command(source: str, target: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own command and arguments)
        [DUKA, "--log-level", "error", "copy-db", "--from", source, "--to", target],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def copied(shop_on_sqlite: str, empty_postgres: str) -> list[str]:
    said: list[str] = []
    assert await copy_db(shop_on_sqlite, empty_postgres, said.append) == 0
    return said


async def test_every_table_arrives_with_every_row(
    shop_on_sqlite: str, empty_postgres: str, copied: list[str]
) -> None:
    """Row counts match table by table, and each table's count is printed."""
    source, target = await counts_of(shop_on_sqlite), await counts_of(empty_postgres)
    assert target == source
    assert (source["orders"], source["payments"]) == (3, 2)
    assert source["payment_events"] > 0
    # Every table of the shop's; what servers keep about themselves is not copied.
    assert set(source) == {t.name for t in metadata.sorted_tables} - RUNTIME_TABLES
    for table, rows in source.items():
        assert f"{table}: {rows} rows" in copied
    assert copied[-1].startswith(f"Copied {sum(source.values())} rows in {len(source)} tables")


async def test_sealed_phone_numbers_read_back_on_the_copy(
    shop_on_sqlite: str, empty_postgres: str, copied: list[str]
) -> None:
    """Sealed values were copied as stored: the same key opens them, and lookups by a
    sealed chat id find the customer."""
    database = Database(empty_postgres, Sealer(parse_key(DATA_KEY)))
    try:
        customer = await database.transaction(customer_by_chat, "terminal", "42")
        assert customer is not None
        [order] = await database.transaction(recent_orders, customer.id)
        [payment] = await payment_rows(database.engine, order.id)
        assert payment.msisdn == payment.paid_msisdn == PAYING_PHONE
        assert payment.checkout_request_id.startswith("ws_CO_")
    finally:
        await database.dispose()
    stored = await _stored_phones(empty_postgres)
    assert stored == await _stored_phones(shop_on_sqlite)  # copied as stored: not resealed
    assert all(value.startswith("v1.") for value in stored)


async def test_new_rows_on_the_copy_get_ids_after_the_copied_ones(
    empty_postgres: str, copied: list[str]
) -> None:
    """The id sequences were moved past the copied ids: a new order does not collide."""
    database = Database(empty_postgres, Sealer(parse_key(DATA_KEY)))
    try:
        async with database.engine.connect() as conn:
            highest = (await conn.execute(select(func.max(orders.c.id)))).scalar_one()
        order = await make_order(database.engine, chat_id="45")
        assert order.id > highest
    finally:
        await database.dispose()


async def test_a_second_copy_into_the_same_target_is_refused(
    shop_on_sqlite: str, empty_postgres: str, copied: list[str], tmp_path: Path
) -> None:
    """Never merged: one line, exit 2, and the target unchanged."""
    before = await counts_of(empty_postgres)
    line = one_line(copy_command(shop_on_sqlite, empty_postgres, tmp_path))
    assert line.startswith("Configuration error in --to: ")
    assert "already holds rows (in customers, " in line
    assert "copy-db never merges" in line
    assert await counts_of(empty_postgres) == before


async def test_refused_while_a_server_runs_on_the_sqlite_source(
    sqlite_url: str, empty_postgres: str, tmp_path: Path
) -> None:
    """A copy taken under a running server would miss what it writes next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        config = make_config(sqlite_url, sock.getsockname()[1], tmp_path)
        _duka, runner = await start_duka(config, sock)
        try:
            done = copy_command(sqlite_url, empty_postgres, tmp_path)
        finally:
            await runner.cleanup()
    line = one_line(done)
    assert line.startswith("Configuration error in --from: a duka server is running on ")
    assert "Fix: stop it first" in line
    assert await _tables_of(empty_postgres) == 0


async def test_refused_while_a_server_elsewhere_is_registered_on_the_source(
    shop_on_sqlite: str, empty_postgres: str, tmp_path: Path
) -> None:
    """A server on another machine holds no lock here, but it is registered as live (a
    PostgreSQL source shared by several servers is the case that matters)."""
    database = shop_on_sqlite.partition(":///")[2]
    seen = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute(
            "INSERT INTO processes VALUES ('elsewhere', 'other-host', 7, '0.1.0', ?, ?, 0)",
            (seen, seen),
        )
    line = one_line(copy_command(shop_on_sqlite, empty_postgres, tmp_path))
    assert line.startswith("Configuration error in --from: 1 duka serve process(es) still use")
    assert "Fix: stop them first" in line
    assert await _tables_of(empty_postgres) == 0


async def test_a_source_that_is_not_a_duka_database_is_refused(
    empty_postgres: str, tmp_path: Path
) -> None:
    """The source is never migrated (nor written) by a copy."""
    source = tmp_path / "other.sqlite3"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    line = one_line(copy_command(f"sqlite+aiosqlite:///{source}", empty_postgres, tmp_path))
    assert "--from: it is not a Duka database (no schema revision" in line
    assert await _tables_of(empty_postgres) == 0
    with sqlite3.connect(source) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("notes",)]


def test_a_missing_sqlite_source_is_refused(tmp_path: Path) -> None:
    """A mistyped path names the option, and creates no empty database."""
    missing = tmp_path / "var" / "typo.sqlite3"
    target = f"sqlite+aiosqlite:///{tmp_path / 'new.sqlite3'}"
    line = one_line(copy_command(f"sqlite+aiosqlite:///{missing}", target, tmp_path))
    assert line.startswith(
        f"Configuration error in --from: there is no SQLite database at {missing}"
    )
    assert not missing.exists()


async def _tables_of(url: str) -> int:
    database = Database(url, Sealer(parse_key(DATA_KEY)))
    try:
        async with database.engine.connect() as conn:
            found = await conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            return int(found.scalar_one())
    finally:
        await database.dispose()


async def _stored_phones(url: str) -> list[str]:
    """payments.msisdn as the database holds it (sealed), bypassing the sealing type."""
    database = Database(url, Sealer(parse_key(DATA_KEY)))
    try:
        async with database.engine.connect() as conn:
            found = await conn.exec_driver_sql("SELECT msisdn FROM payments ORDER BY id")
            return [str(value) for value in found.scalars()]
    finally:
        await database.dispose()
