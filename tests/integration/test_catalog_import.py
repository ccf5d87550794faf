"""Catalog edits without a restart: ``duka catalog import FILE`` and SIGHUP to ``duka serve``
load a catalog file into the running shop, report each change and each bad entry by line,
apply the good entries and leave confirmed orders as they were."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from bot.app import DATABASE
from bot.catalog import CatalogError, CatalogFile, ProductSpec, sync_catalog
from bot.catalog_import import header_lines, import_catalog, read_checked
from bot.cli import main
from storage.engine import Database, migrate
from storage.orders import get_order_items
from storage.schema import products
from storage.sealing import Sealer, parse_key
from tests.conftest import (
    CALLBACK_SECRET,
    DATA_KEY,
    TEST_TOML,
    RunningDuka,
    make_config,
    start_duka,
)
from tests.integration.test_conversation import CATALOG, Customer, labels

# The shop's catalog (sukuma 30, unga 210, sukari 160) edited: unga dearer, sukari's price
# mistyped as text (line 7), mchele new, sukuma left out.
EDITED = """\
[[products]]
sku = "unga"
name = "Unga 2kg"
price = 250
category = "Staples"

[[products]]
sku = "sukari"
name = "Sukari 1kg"
price = "160"
category = "Staples"

[[products]]  # new
sku = "mchele"
name = "Mchele 1kg"
price = 180
category = "Staples"
stock = 12
"""
BAD_SUKARI = (
    "line 7: products[2]: price of 'sukari' is '160', not a whole number of shillings; "
    "fix: use a whole number from 1 to 250,000, e.g. price = 120"
)


def prices(conn: Connection) -> dict[str, tuple[int, bool]]:
    rows = conn.execute(select(products.c.sku, products.c.price, products.c.active))
    return {row.sku: (row.price, row.active) for row in rows}


async def test_good_entries_are_applied_and_each_bad_one_is_named_by_line(
    shop: RunningDuka, tmp_path: Path
) -> None:
    """The bad entry's product stays as it was; one the file leaves out is hidden."""
    path = tmp_path / "shop.toml"
    path.write_text(EDITED)
    report = await import_catalog(shop.app[DATABASE], CatalogFile(path))
    assert report.changes == (
        "unga: price KES 210 -> 250",
        "mchele: added (Mchele 1kg, KES 180, stock 12)",
        "sukuma: hidden (not in the file)",
    )
    assert [str(bad) for bad in report.bad] == [BAD_SUKARI]
    assert report.summary() == (
        f"{path}: 3 changes; 1 bad entry was skipped: fix and import again."
    )
    assert await shop.app[DATABASE].transaction(prices) == {
        "sukuma": (30, False),
        "unga": (250, True),
        "sukari": (160, True),
        "mchele": (180, True),
    }
    [staples] = await Customer(shop, "6001").presses("cat:Staples")
    assert labels(staples)[:3] == [
        "Unga 2kg — KES 250",
        "Sukari 1kg — KES 160",
        "Mchele 1kg — KES 180",
    ]


async def test_a_new_price_leaves_a_confirmed_order_as_it_was(
    shop: RunningDuka, tmp_path: Path
) -> None:
    customer = Customer(shop, "6002")
    confirmed = await customer.confirms_an_order("unga:2")
    path = tmp_path / "shop.toml"
    path.write_text(EDITED.replace('"160"', "160"))
    report = await import_catalog(shop.app[DATABASE], CatalogFile(path))
    assert report.complete
    [after] = await customer.orders()
    items = await shop.app[DATABASE].transaction(get_order_items, confirmed.id)
    assert (after.total, [(i.sku, i.unit_price, i.quantity) for i in items]) == (
        420,
        [("unga", 210, 2)],
    )


@pytest.fixture
async def staples_db(sqlite_url: str) -> AsyncIterator[Database]:
    """A SQLite shop database without a server: sukuma, unga and sukari, on sale."""
    database = Database(sqlite_url, Sealer(parse_key(DATA_KEY)))
    await migrate(database.engine)
    specs = [
        ProductSpec("sukuma", "Sukuma wiki", 30),
        ProductSpec("unga", "Unga 2kg", 210),
        ProductSpec("sukari", "Sukari 1kg", 160),
    ]
    await database.transaction(sync_catalog, specs)
    try:
        yield database
    finally:
        await database.dispose()


async def test_an_entry_without_a_usable_sku_hides_nothing(
    staples_db: Database, tmp_path: Path
) -> None:
    """It may have meant any product: hiding one the merchant kept would be worse."""
    path = tmp_path / "shop.toml"
    path.write_text('[[products]]\nsku = "unga"\nname = "Unga 2kg"\nprice = 220\n\n[[products]]\n')
    report = await import_catalog(staples_db, CatalogFile(path))
    assert report.changes == ("unga: price KES 210 -> 220",)
    assert report.notes == (
        "nothing hidden: products[2] names no usable sku, so it may mean any product",
    )
    assert [bad.line for bad in report.bad] == [6]
    on_sale = await staples_db.transaction(prices)
    assert on_sale == {"sukuma": (30, True), "unga": (220, True), "sukari": (160, True)}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[products]]\nsku = "unga"\nprice = 2 50\n', "(at line 3, column 11)"),
        ("[[product]]\nsku = 'unga'\n", "unknown tables ['product']"),
        ("# nothing yet\n", "lists no [[products]]"),
    ],
)
def test_an_unusable_file_is_refused_whole(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(text)
    with pytest.raises(CatalogError) as raised:
        read_checked(CatalogFile(path))
    assert problem in raised.value.problem


def test_entry_lines_come_from_their_headers_or_not_at_all() -> None:
    spaced = '[[products]]\nsku = "a"\n\n  [[ catalog . "products" ]]  # b\nsku = "b"\n'
    assert header_lines(spaced, "catalog.products", 1) == [4]
    # A header-like line in a multi-line string: the count is off, so no line is guessed.
    fooled = '[[products]]\ndescription = """\n[[products]]\n"""\n'
    assert header_lines(fooled, "products", 1) == [None]


def test_the_command_prints_each_change_and_bad_entry_and_exits_by_outcome(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0: all applied; 1: some entries skipped; 2: nothing read. The file may be the
    configured DUKA_CATALOG itself, bad entry and all."""
    database = tmp_path / "duka.sqlite3"
    catalog = tmp_path / "shop.toml"
    catalog.write_text(CATALOG.replace("[[catalog.products]]", "[[products]]"))
    (tmp_path / "config.toml").write_text("")
    for name in ("DUKA_HTTP_HOST", "DUKA_HTTP_PORT", "MPESA_BASE_URL", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DUKA_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("DUKA_CATALOG", str(catalog))
    monkeypatch.setenv("DUKA_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("DUKA_DATA_KEY", DATA_KEY)
    monkeypatch.setenv("MPESA_ENVIRONMENT", "simulator")
    monkeypatch.setenv("MPESA_CALLBACK_URL", f"http://127.0.0.1:8080/hooks/stk/{CALLBACK_SECRET}")

    assert main(["catalog", "import", str(catalog)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sukuma: added (Sukuma wiki, KES 30)",
        "unga: added (Unga 2kg, KES 210)",
        "sukari: added (Sukari 1kg, KES 160)",
        f"{catalog}: 3 changes.",
    ]
    catalog.write_text(EDITED)
    assert main(["catalog", "import", str(catalog)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "unga: price KES 210 -> 250",
        "mchele: added (Mchele 1kg, KES 180, stock 12)",
        "sukuma: hidden (not in the file)",
        BAD_SUKARI,
        f"{catalog}: 3 changes; 1 bad entry was skipped: fix and import again.",
    ]
    with sqlite3.connect(database) as conn:
        assert dict(conn.execute("SELECT sku, price FROM products WHERE active")) == {
            "unga": 250,
            "sukari": 160,
            "mchele": 180,
        }
    assert main(["catalog", "import", str(tmp_path / "missing.toml")]) == 2
    assert "cannot be read (No such file or directory)" in capsys.readouterr().out


async def test_sighup_applies_the_configured_catalog_again(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What `kill -HUP` does to `duka serve`: config.toml's catalog is read again, logged,
    and the new Kiswahili names reach the chat."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = make_config(sqlite_url, sock.getsockname()[1], tmp_path, toml=TEST_TOML + CATALOG)
    duka, runner = await start_duka(config, sock, reload_catalog_on_sighup=True)
    try:
        # Were the handler missing, SIGHUP would end the test run: make sure first.
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        edited = CATALOG.replace("price = 210", 'price = 250\nname_sw = "Unga ya ngano 2kg"')
        (tmp_path / "config.toml").write_text(TEST_TOML + edited)
        with caplog.at_level(logging.INFO, logger="bot.catalog_reload"):
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100):
                if "catalog: unga: price KES 210 -> 250" in caplog.messages:
                    break
                await asyncio.sleep(0.02)
        assert f"catalog: {tmp_path / 'config.toml'}: 1 change." in caplog.messages
        customer = Customer(duka, "6003")
        await customer.presses("lang:sw")
        [staples] = await customer.presses("cat:Staples")
        assert "Unga ya ngano 2kg — KES 250" in labels(staples)
    finally:
        await runner.cleanup()
        sock.close()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
