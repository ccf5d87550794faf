"""``duka backup`` and ``duka restore``, run as the real command beside a running Duka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from payments.callback_urls import attempt_callback_url
from storage.backup import BackupError, restore_sqlite, sqlite_file
from storage.schema import customers, order_items, orders, payments
from tests.conftest import DATA_KEY, RunningDuka, make_config, start_duka
from tests.integration.test_callback_webhook import success_body

SEEDED = 4000  # more than the burst can settle while the backup runs
SENDERS = 16


async def duka_command(tmp_path: Path, database_url: str, *args: str) -> tuple[int, str]:
    """Run the installed ``duka`` with this test's database; (exit code, stdout + stderr)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DUKA_", "MPESA_", "TELEGRAM_", "WHATSAPP_"))
    }
    # The test's config.toml, when it made one, is found in the working directory.
    env |= {"DUKA_DATABASE_URL": database_url, "DUKA_DATA_KEY": DATA_KEY}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "duka"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def seed_pending_payments(duka: RunningDuka, count: int) -> None:
    """``count`` orders awaiting payment, each with a pending STK attempt of its own URL."""
    now = datetime.now(UTC)
    rows = [
        (
            {
                "id": i,
                "channel": "terminal",
                "chat_id": f"c{i}",
                "name": "Amina",
                "created_at": now,
            },
            {
                "id": i,
                "reference": f"BK-{i:07d}",
                "customer_id": i,
                "status": "awaiting_payment",
                "total": 350,
                "created_at": now,
                "updated_at": now,
            },
            {"order_id": i, "sku": "unga", "name": "Unga", "unit_price": 350, "quantity": 1},
            {
                "id": i,
                "order_id": i,
                "status": "pending",
                "msisdn": "254712345678",
                "amount": 350,
                "checkout_request_id": f"ws_CO_backup_{i}",
                "merchant_request_id": f"29115-{i}",
                "created_at": now,
                "updated_at": now,
                "push_accepted_at": now,
                "next_query_at": now + timedelta(hours=1),
                "own_callback_url": True,
            },
        )
        for i in range(1, count + 1)
    ]
    async with duka.engine.begin() as conn:
        for position, table in enumerate((customers, orders, order_items, payments)):
            await conn.execute(insert(table), [row[position] for row in rows])


def paid_payment_ids(database: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return {row[0] for row in db.execute("SELECT id FROM payments WHERE status = 'paid'")}


def kept_databases(directory: Path) -> list[Path]:
    """The databases restores replaced, kept beside them."""
    return sorted(directory.glob("*.before-restore-*[0-9Z]"))


async def test_backup_during_a_callback_burst_holds_every_acknowledged_callback(
    sqlite_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """Callbacks keep arriving while `duka backup` runs; every one acknowledged before the
    backup started is paid in the copy, and `duka restore` puts that copy back."""
    config = make_config(sqlite_url, free_socket.getsockname()[1], tmp_path)
    running, runner = await start_duka(config, free_socket, run_dispatcher=False)
    await seed_pending_payments(running, SEEDED)
    acknowledged: dict[int, float] = {}  # payment id -> when its 200 arrived
    queue = iter(range(1, SEEDED + 1))
    backup_done = asyncio.Event()
    under_way = asyncio.Event()  # enough acknowledged that the backup starts mid-burst

    async def sender(client: httpx.AsyncClient) -> None:
        for payment_id in queue:
            if backup_done.is_set():
                return
            url = attempt_callback_url(running.callback_url, payment_id)
            body = success_body(f"ws_CO_backup_{payment_id}", receipt=f"BK{payment_id:08d}")
            response = await client.post(url, content=body)
            assert response.status_code == 200, response.text
            acknowledged[payment_id] = time.monotonic()
            if len(acknowledged) >= 200:
                under_way.set()

    copy = tmp_path / "backup.sqlite3"
    try:
        async with httpx.AsyncClient(headers={"Content-Type": "application/json"}) as client:
            senders = [asyncio.create_task(sender(client)) for _ in range(SENDERS)]
            await asyncio.wait_for(under_way.wait(), 30)
            started = time.monotonic()
            code, said = await duka_command(tmp_path, sqlite_url, "backup", str(copy))
            backup_done.set()
            await asyncio.gather(*senders)
    finally:
        await runner.cleanup()
    assert code == 0, said
    assert said.startswith(f"Backed up {sqlite_file(sqlite_url)} to {copy}")
    before = {pid for pid, at in acknowledged.items() if at < started}
    after = set(acknowledged) - before
    assert before
    assert after, "no callback arrived while the backup ran: the burst was too short"
    in_copy = paid_payment_ids(copy)
    assert before <= in_copy

    code, said = await duka_command(tmp_path, sqlite_url, "restore", str(copy))
    assert code == 0, said
    database = sqlite_file(sqlite_url)
    assert database is not None
    assert paid_payment_ids(database) == in_copy
    [replaced] = kept_databases(tmp_path)
    assert set(acknowledged) <= paid_payment_ids(replaced)


async def test_restore_refuses_while_a_server_runs_on_the_database(
    duka_sqlite: RunningDuka, tmp_path: Path
) -> None:
    """`duka restore` exits 2 naming the running server, and the database stays as it was."""
    url = duka_sqlite.config.database_url
    copy = tmp_path / "copy.sqlite3"
    assert (await duka_command(tmp_path, url, "backup", str(copy)))[0] == 0
    code, said = await duka_command(tmp_path, url, "restore", str(copy))
    assert code == 2
    assert said == (
        f"Nothing restored: a duka server is running on {sqlite_file(url)}. "
        "Stop it first (and start it again afterwards).\n"
    )
    assert kept_databases(tmp_path) == []


async def test_restore_refuses_a_file_that_is_not_a_duka_database(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A stray SQLite file is refused before anything is replaced."""
    stray = tmp_path / "notes.sqlite3"
    with contextlib.closing(sqlite3.connect(stray)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    code, said = await duka_command(tmp_path, sqlite_url, "restore", str(stray))
    assert (code, said) == (
        2,
        f"Nothing restored: {stray} is not a Duka database (no SQLite file with our schema)\n",
    )


async def test_backup_of_postgresql_prints_pg_dump_without_the_password(tmp_path: Path) -> None:
    """On PostgreSQL `duka backup` prints the pg_dump command, password left out, and exits 2."""
    url = "postgresql+asyncpg://shop:s3cr3t-pw@db.example:5433/duka"
    code, said = await duka_command(tmp_path, url, "backup", str(tmp_path / "duka.dump"))
    assert code == 2
    assert f"pg_dump --format=custom --file={tmp_path / 'duka.dump'} " in said
    assert "postgresql://shop@db.example:5433/duka" in said
    assert "s3cr3t-pw" not in said


def test_a_backup_from_a_newer_duka_is_refused(tmp_path: Path) -> None:
    """A schema revision these migrations do not know: refused, nothing replaced."""
    newer = tmp_path / "newer.sqlite3"
    with contextlib.closing(sqlite3.connect(newer)) as db:
        db.execute("CREATE TABLE alembic_version (version_num TEXT)")
        db.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
        db.commit()
    database = tmp_path / "duka.sqlite3"
    with pytest.raises(BackupError, match="made by a newer Duka"):
        restore_sqlite(newer, database)
    assert not database.exists()
