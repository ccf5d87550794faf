"""/export on Telegram and on WhatsApp: the merchant gets the orders /report counts as a
CSV file in their chat (Telegram's sendDocument; WhatsApp's media upload, then a document
message), read back from the fakes with the csv module and checked against the orders
table. A customer typing /export gets nothing of the shop's; a file the platform refuses
is answered with a message that says so.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.channels.terminal import TerminalChannel
from bot.chat.model import Document, Reply
from payments.credentials import NAIROBI
from storage.schema import orders, payments
from tests.conftest import RunningDuka
from tests.e2e import test_telegram_shop as tg
from tests.e2e import test_whatsapp_shop as wa
from tests.e2e.test_merchant_review import (
    HINT,
    MERCHANT_USER,
    ChatSide,
    TelegramSide,
    WhatsAppSide,
    side,
)
from tests.helpers import wait_for_payment_status, wait_until
from tests.integration.test_conversation import Customer

__all__ = ["side"]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite only: what /export reads is tested on SQLite and PostgreSQL in
    tests/integration/test_reports.py; here the subject is the file's way through each
    channel, which no database changes."""
    return sqlite_url


@dataclass(frozen=True)
class Received:
    """A file as the merchant's phone got it."""

    filename: str
    mime_type: str
    content: bytes
    caption: str | None

    def rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.content.decode("utf-8"))))


def files_to_merchant(side: ChatSide) -> list[Received]:
    if isinstance(side, TelegramSide):
        sent: list[Any] = side.fake.documents_to(tg.MERCHANT)
    else:
        assert isinstance(side, WhatsAppSide)
        sent = side.graph.documents_to(MERCHANT_USER)
    return [Received(d.filename, d.mime_type, d.content, d.caption) for d in sent]


async def merchant_exports(side: ChatSide, text: str) -> Received:
    """The merchant sends ``text``; the file that arrives."""
    before = len(files_to_merchant(side))
    await side._merchant_writes(text)
    await wait_until(lambda: len(files_to_merchant(side)) > before, what=f"a file for {text!r}")
    return files_to_merchant(side)[-1]


async def two_paid_orders(duka: RunningDuka) -> list[Any]:
    """Two customers order and pay (the same conversation and payments as every channel's);
    the paid rows of the orders table, in the order they were paid."""
    for chat, items in (("7001", ("unga:2", "sukuma:1")), ("7002", ("sukuma:1",))):
        customer = Customer(duka, chat)
        order = await customer.confirms_an_order(*items)
        await customer.pays_from("0712345678")
        await wait_for_payment_status(duka.engine, order.id, "paid")
    async with duka.engine.connect() as conn:
        query = select(orders).where(orders.c.status == "paid").order_by(orders.c.paid_at)
        return list((await conn.execute(query)).all())


async def receipts(duka: RunningDuka, order_id: int) -> str:
    async with duka.engine.connect() as conn:
        query = select(payments.c.mpesa_receipt).where(
            payments.c.order_id == order_id, payments.c.status == "paid"
        )
        return " ".join((await conn.execute(query)).scalars())


async def test_export_sends_the_paid_orders_as_a_csv_file_in_the_merchants_chat(
    side: ChatSide,
) -> None:
    paid = await two_paid_orders(side.duka)
    today = datetime.now(NAIROBI).date()
    exported = await merchant_exports(side, "/export")
    assert exported.filename == f"duka-paid-{today}.csv"
    # WhatsApp takes no text/csv: the file goes as plain text, its name still says CSV.
    assert exported.mime_type == ("text/csv" if isinstance(side, TelegramSide) else "text/plain")
    rows = exported.rows()
    assert [row["order"] for row in rows] == [order.reference for order in paid]
    assert [int(row["total_kes"]) for row in rows] == [order.total for order in paid]
    assert [row["mpesa_receipts"] for row in rows] == [
        await receipts(side.duka, order.id) for order in paid
    ]
    assert rows[0]["items"] == "2 × Unga 2kg; 1 × Sukuma wiki"
    total = sum(order.total for order in paid)
    assert exported.caption == (
        f"Paid {today} (Nairobi time): 2 orders, KES {total:,}. "
        f"One row per order in {exported.filename}."
    )

    week = await merchant_exports(side, "/export week")
    assert week.filename == f"duka-paid-{today - timedelta(days=6)}_{today}.csv"
    assert week.rows() == rows
    again = await merchant_exports(side, f"/export {today}..{today}")
    assert again.content == exported.content
    usage = await side.merchant_sends("/export last month")
    assert usage.startswith("Send /export (today), /export week")
    assert len(files_to_merchant(side)) == 3


async def test_a_customer_sending_export_gets_no_file_and_no_merchant_data(
    side: ChatSide,
) -> None:
    paid = await two_paid_orders(side.duka)
    answer = await side.customer_sends("/export")
    assert answer.startswith(HINT)
    seen = "\n".join(side.customer_texts())
    assert not any(order.reference in seen for order in paid)
    if isinstance(side, TelegramSide):
        assert side.fake.documents == []
    else:
        assert isinstance(side, WhatsAppSide)
        assert side.graph.uploads == []
        assert side.graph.documents_to(wa.WANJIRU) == []


async def test_a_file_the_platform_refuses_is_answered_with_a_message(side: ChatSide) -> None:
    await two_paid_orders(side.duka)
    if isinstance(side, TelegramSide):
        side.fake.fail_next("sendDocument", 400, "Bad Request: file is too big")
    else:
        assert isinstance(side, WhatsAppSide)
        side.graph.fail_next_upload(400, 131053, "Unable to upload the media.")
    name = f"duka-paid-{datetime.now(NAIROBI).date()}.csv"
    await side._merchant_writes("/export")

    def told() -> str | None:
        notices = side.merchant_notices()
        return next((t for t in notices if t.startswith(f"The file {name} was not sent:")), None)

    await wait_until(lambda: told() is not None, what="the merchant to hear the file failed")
    assert "Try again later" in (told() or "")
    assert files_to_merchant(side) == []


async def test_the_terminal_saves_the_file_and_shows_where(tmp_path: Path) -> None:
    shown: list[str] = []
    terminal = TerminalChannel(show=shown.append, files=tmp_path / "exports")
    content = b"order,total_kes\r\nDK-1,60\r\n"
    document = Document("../duka-paid-2026-12-01.csv", content, "text/csv")
    await terminal.send("merchant", Reply("Paid 2026-12-01: 1 order.", document=document))
    saved = tmp_path / "exports" / "duka-paid-2026-12-01.csv"  # never outside the directory
    assert saved.read_bytes() == document.content
    assert shown == [f"[shop → merchant] Paid 2026-12-01: 1 order.\n    [file] {saved}"]
