"""Phone numbers sealed at rest (DUKA_DATA_KEY), over real HTTP and real databases: a dump
of the database shows no number in clear, `duka rekey` moves every row to a new key,
`duka keygen` prints keys `serve` accepts, and the 0008 migration seals older rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiohttp import web
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from bot.app import PAYMENTS
from bot.cli import main
from bot.config import ConfigError, load_config
from storage.engine import _alembic_config, create_engine, migrate
from storage.schema import customers, payment_events, payments
from storage.sealing import Sealer, generate_key, parse_key
from tests.c2b_support import SUCCESS, c2b_url, confirmation_body, post_json, unmatched_rows
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.e2e.test_telegram_shop import CATALOG
from tests.e2e.test_whatsapp_shop import whatsapp_env
from tests.fakes.graph_api import FakeGraph, WaUser
from tests.helpers import make_order, payment_rows, wait_for_payment_status

REPO = Path(__file__).resolve().parents[2]
PHONE = "254712345678"
# Every way the number can be written; the last is in each of the others.
IN_CLEAR = (PHONE, "0712345678", "712345678")
CUSTOMER = WaUser(PHONE, name="Wanjiru")  # no BSUID: the chat id is the phone number


def a_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def dump(database_url: str) -> str:
    """The whole database as text, as a backup or a stolen copy would hold it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        if sqlite3_cli := shutil.which("sqlite3"):
            return await run([sqlite3_cli, url.database, ".dump"])
        with sqlite3.connect(url.database) as conn:
            return "\n".join(conn.iterdump())
    pg_dump = shutil.which("pg_dump") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)), None
    )
    if pg_dump is None:
        return await select_everything(database_url)
    command_line = [pg_dump, "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    command_line += ["-U", url.username or "postgres", "--no-owner", url.database or ""]
    return await run(command_line, PGPASSWORD=url.password or "")


async def run(command_line: list[str], **env: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run,  # the sqlite3 CLI or pg_dump, found on PATH
        command_line,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return done.stdout


async def select_everything(database_url: str) -> str:
    """Without pg_dump: every row of every table, as PostgreSQL prints it (no Sealed types)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        lines = [f"CREATE TABLE {t['tablename']}" for t in tables]
        for table in tables:
            query = f'SELECT t::text AS line FROM "{table["tablename"]}" t'  # noqa: S608
            rows = await conn.fetch(query)
            lines += [row["line"] for row in rows]
        return "\n".join(lines)
    finally:
        await conn.close()


async def test_a_database_dump_shows_no_phone_number_in_clear(
    database_url: str, tmp_path: Path
) -> None:
    """An STK payment, a refused callback body, a C2B confirmation and a WhatsApp chat, all
    carrying the customer's number: the app reads the number back, but a dump of the
    database (which does hold the order's reference) shows it nowhere."""
    sock = a_socket()
    port = sock.getsockname()[1]
    async with FakeGraph() as graph:
        env = {**whatsapp_env(graph), "MPESA_C2B_CONFIRMATION_URL": c2b_url(port)}
        config = make_config(database_url, port, tmp_path, toml=TEST_TOML + CATALOG, **env)
        duka, runner = await start_duka(config, sock, dispatch_seconds=0.05)
        try:
            order = await make_order(duka.engine, chat_id=PHONE)
            await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
            await wait_for_payment_status(duka.engine, order.id, "paid")
            async with httpx.AsyncClient() as client:
                refused = await client.post(
                    duka.callback_url,
                    content=b'{"Body": {"PhoneNumber": 254712345678, "Note": "0712345678"',
                    headers={"Content-Type": "application/json"},
                )
            assert refused.status_code == 400
            body = confirmation_body("RKL51ZDR4F", "DK-YYYYYY", "120.00", msisdn=PHONE)
            confirmed = await post_json(config.daraja.c2b_confirmation_url, body)
            assert (confirmed.status_code, confirmed.json()) == (200, SUCCESS)
            webhook = f"{duka.base_url}/whatsapp/webhook"
            assert await graph.post_webhook(webhook, graph.text(CUSTOMER, "Hi")) == 200
            await graph.wait_for(lambda g: bool(g.texts_to(CUSTOMER)))

            # The app itself reads every one of them back.
            [payment] = await payment_rows(duka.engine, order.id)
            assert payment.msisdn == PHONE
            [unmatched] = await unmatched_rows(duka.engine)
            assert PHONE in unmatched.raw
            stored = await dump(database_url)
        finally:
            await runner.cleanup()

    assert order.reference in stored  # a real dump, with the data that is not secret
    assert "CREATE TABLE" in stored
    for written in IN_CLEAR:
        assert written not in stored
    assert "enc." in stored  # the numbers in raw bodies, as tokens


async def start_on(
    database_url: str, tmp_path: Path, **env: str
) -> tuple[RunningDuka, web.AppRunner]:
    sock = a_socket()
    config = make_config(database_url, sock.getsockname()[1], tmp_path, **env)
    return await start_duka(config, sock)


async def test_rekey_moves_every_row_to_the_new_key(sqlite_url: str, tmp_path: Path) -> None:
    """`duka rekey` (the real CLI) re-seals with key B: Duka then starts on B alone and
    reads the number, and refuses to start on the old key A, naming DUKA_DATA_KEY."""
    key_a, key_b = generate_key(), generate_key()
    duka, runner = await start_on(sqlite_url, tmp_path, DUKA_DATA_KEY=key_a)
    try:
        order = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
        await wait_for_payment_status(duka.engine, order.id, "paid")
    finally:
        await runner.cleanup()

    # A cached Daraja token (PostgreSQL keeps one for all processes): dropped, not re-sealed.
    database_file = sqlite_url.partition(":///")[2]
    with contextlib.closing(sqlite3.connect(database_file)) as db, db:
        db.execute(
            "INSERT INTO daraja_tokens VALUES ('app', 'v1.sealed-with-a', '2026-12-02 10:00:00')"
        )
    config_file = tmp_path / "rekey.toml"
    config_file.write_text(TEST_TOML)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DUKA_", "MPESA_"))}
    rekeyed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "rekey"],
        env={
            **clean,
            "DUKA_CONFIG": str(config_file),
            "DUKA_DATABASE_URL": sqlite_url,
            "MPESA_ENVIRONMENT": "simulator",
            "DUKA_DATA_KEY": key_b,
            "DUKA_DATA_KEY_OLD": key_a,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "Re-sealed" in rekeyed.stdout
    with contextlib.closing(sqlite3.connect(database_file)) as db:
        assert db.execute("SELECT count(*) FROM daraja_tokens").fetchone() == (0,)

    duka, runner = await start_on(sqlite_url, tmp_path, DUKA_DATA_KEY=key_b)
    try:
        [payment] = await payment_rows(duka.engine, order.id)
        assert (payment.status, payment.msisdn) == ("paid", PHONE)
    finally:
        await runner.cleanup()

    with pytest.raises(ConfigError) as refused:
        await start_on(sqlite_url, tmp_path, DUKA_DATA_KEY=key_a)
    assert refused.value.key == "DUKA_DATA_KEY"
    assert str(refused.value).startswith("Configuration error in DUKA_DATA_KEY")


def test_keygen_prints_a_key_that_serve_accepts() -> None:
    """`duka keygen` prints one line: a 32-byte key, a new one each run."""

    def keygen() -> str:
        run = subprocess.run(
            [sys.executable, "-m", "bot", "keygen"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        [line] = run.stdout.splitlines()
        return line

    first, second = keygen(), keygen()
    assert len(parse_key(first)) == 32
    assert len(parse_key(second)) == 32
    assert first != second


def test_serve_outside_the_simulator_refuses_without_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A production config complete but for DUKA_DATA_KEY: `duka serve` exits 2 before
    starting, saying DUKA_DATA_KEY is missing and that `duka keygen` makes one."""
    for name in list(os.environ):
        if name.startswith(("MPESA_", "DUKA_", "TELEGRAM_", "WHATSAPP_")):
            monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    path.write_text("")
    production = {
        "DUKA_CONFIG": str(path),
        "MPESA_ENVIRONMENT": "production",
        "MPESA_CONSUMER_KEY": "key",
        "MPESA_CONSUMER_SECRET": "secret",
        "MPESA_PASSKEY": "passkey",
        "MPESA_SHORTCODE": "600100",
        "MPESA_CALLBACK_URL": "https://shop.example.com/hooks/stk/Zk3p9qLm2VbX8rT5wYc7NdA4hG6jE",
    }
    for name, value in production.items():
        monkeypatch.setenv(name, value)

    assert main(["serve"]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("Configuration error in DUKA_DATA_KEY: is not set")
    assert "duka keygen" in printed

    load_config(env={**production, "DUKA_DATA_KEY": generate_key()})  # the only thing missing


async def test_an_existing_database_is_sealed_by_the_migration(tmp_path: Path) -> None:
    """Rows written in clear before 0008 (a customer, a payment, a raw callback body) are
    sealed by the migration: the file no longer holds the number, the app still reads it."""
    path = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", Sealer(parse_key(generate_key())))
    checkout = "ws_CO_261120261021150712345678"
    raw = f'{{"CheckoutRequestID":"{checkout}","Item":[{{"Name":"PhoneNumber","Value":{PHONE}}}]}}'
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0007"))
            for statement, values in [
                (
                    "INSERT INTO customers (id, channel, chat_id, name, msisdn, created_at) "
                    "VALUES (1, 'whatsapp', :phone, 'Wanjiru', :phone, '2026-11-26 10:00:00')",
                    {"phone": PHONE},
                ),
                (
                    "INSERT INTO orders (id, reference, customer_id, status, total, created_at, "
                    "updated_at) VALUES (1, 'DK-OLD001', 1, 'paid', 350, '2026-11-26 10:00:00', "
                    "'2026-11-26 10:00:00')",
                    {},
                ),
                (
                    "INSERT INTO payments (id, order_id, status, msisdn, amount, "
                    "checkout_request_id, created_at, updated_at) VALUES (1, 1, 'paid', :phone, "
                    "350, :checkout, '2026-11-26 10:00:00', '2026-11-26 10:00:00')",
                    {"phone": PHONE, "checkout": checkout},
                ),
                (
                    "INSERT INTO payment_events (id, source, received_at, raw, "
                    "checkout_request_id, payment_id, status) VALUES (1, 'callback', "
                    "'2026-11-26 10:00:00', :raw, :checkout, 1, 'applied')",
                    {"raw": raw, "checkout": checkout},
                ),
            ]:
                await conn.execute(text(statement), values)

        await migrate(engine)

        with sqlite3.connect(path) as conn:
            stored = "\n".join(conn.iterdump())
        assert "DK-OLD001" in stored
        assert "712345678" not in stored

        async with engine.connect() as conn:
            customer = (await conn.execute(select(customers.c.chat_id, customers.c.msisdn))).one()
            payment = (
                await conn.execute(select(payments.c.msisdn, payments.c.checkout_request_id))
            ).one()
            event = (
                await conn.execute(
                    select(payment_events.c.raw, payment_events.c.checkout_request_id)
                )
            ).one()
        assert tuple(customer) == (PHONE, PHONE)
        assert tuple(payment) == (PHONE, checkout)
        assert tuple(event) == (raw, checkout)
    finally:
        await engine.dispose()
