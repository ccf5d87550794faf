"""The daily summary at closing time, on a real database (SQLite file; PostgreSQL where
reachable): one summary per day, to every merchant chat, through the outbox; never twice,
even after a restart; its numbers are the orders table's. The clock is fixed, not waited on."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import Connection, func, select

from bot.app import DATABASE
from bot.channels.base import Notice
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.chat.model import Reply
from bot.daily_summary import DailySummary, summary_key
from bot.notifications import OutboxDispatcher
from bot.texts import kes
from payments.credentials import NAIROBI
from payments.ledger import set_order_statuses
from payments.settlement import MessageKind
from payments.states import OrderStatus
from storage.engine import Database
from storage.orders import NewOrderItem, create_order, get_or_create_customer
from storage.schema import orders, outbox
from tests.conftest import TEST_TOML, make_config, start_duka
from tests.helpers import outbox_rows, wait_until

CLOSING = time(20, 0)
DAY = date(2026, 5, 1)
MERCHANTS = ("telegram:5550001", "whatsapp:254712000111", "terminal:merchant")


def nairobi(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NAIROBI).astimezone(UTC)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Recording:
    """A merchant's channel that keeps what it is given (the platforms have their own tests)."""

    name: str
    got: list[tuple[str, Notice]] = field(default_factory=list)

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        raise AssertionError("the dispatcher notifies; it does not send")

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        self.got.append((chat_id, notice))
        return str(len(self.got))


def _sales(conn: Connection) -> None:
    """Two orders paid on DAY, one paid the day before, one never paid."""
    customer = get_or_create_customer(conn, "telegram", "7001", "Wanjiru", nairobi(DAY, 8))
    unga = NewOrderItem("unga", "Unga 2kg", 210, 2)
    sukari = NewOrderItem("sukari", "Sukari 1kg", 160, 1)
    for items, paid_at in (
        ((unga, sukari), nairobi(DAY, 9, 15)),
        ((sukari,), nairobi(DAY, 19, 40)),
        ((unga,), nairobi(DAY - timedelta(days=1), 21)),
        ((unga,), None),
    ):
        order = create_order(conn, customer.id, list(items), nairobi(DAY, 8))
        if paid_at is not None:
            set_order_statuses(
                conn, [(order.id, OrderStatus.AWAITING_PAYMENT, OrderStatus.PAID)], paid_at
            )


def _late_sale(conn: Connection, now: datetime) -> None:
    customer = get_or_create_customer(conn, "telegram", "7002", "Baraka", now)
    order = create_order(conn, customer.id, [NewOrderItem("unga", "Unga 2kg", 210, 1)], now)
    set_order_statuses(conn, [(order.id, OrderStatus.AWAITING_PAYMENT, OrderStatus.PAID)], now)


def _paid_on(conn: Connection, day: date) -> tuple[int, int]:
    start = datetime.combine(day, time(), tzinfo=NAIROBI)
    count, total = conn.execute(
        select(func.count(orders.c.id), func.coalesce(func.sum(orders.c.total), 0))
        .where(orders.c.status == OrderStatus.PAID)
        .where(orders.c.paid_at >= start, orders.c.paid_at < start + timedelta(days=1))
    ).one()
    return int(count), int(total)


def _summaries(conn: Connection) -> list[tuple[str, str | None, str]]:
    rows = conn.execute(
        select(outbox.c.dedupe_key, outbox.c.recipient, outbox.c.status)
        .where(outbox.c.kind == MessageKind.DAILY_SUMMARY)
        .order_by(outbox.c.id)
    )
    return [tuple(row) for row in rows]


async def test_closing_time_queues_one_summary_per_merchant_once_a_day(
    database: Database,
) -> None:
    """Nothing before 20:00; at 20:00 one outbox row per merchant chat with the day's report;
    nothing more that day, even from a restarted scheduler; the next day's at its 20:00."""
    await database.transaction(_sales)
    clock = Clock(nairobi(DAY, 19, 59))
    channels = {name: Recording(name) for name in ("telegram", "whatsapp", "terminal")}
    dispatcher = OutboxDispatcher(database, channels, MERCHANTS, clock)
    summary = DailySummary(database, CLOSING, clock, on_queued=dispatcher.wake)

    assert await summary.tick() is None
    assert await database.transaction(_summaries) == []

    clock.now = nairobi(DAY, 20, 0)
    assert await summary.tick() == DAY
    assert await dispatcher.deliver_due() == len(MERCHANTS)
    key = summary_key(DAY)
    assert await database.transaction(_summaries) == [
        (key, None, "expanded"),  # the day's record: found again after a restart
        *((f"{key}@{merchant}", merchant, "sent") for merchant in MERCHANTS),
    ]
    for channel in channels.values():
        [(chat_id, notice)] = channel.got
        assert f"{channel.name}:{chat_id}" in MERCHANTS
        assert notice.kind == MessageKind.DAILY_SUMMARY
        assert notice.reply.text.startswith("Your daily summary, at closing time:\n")
        assert "Paid 2026-05-01 (Nairobi time): 2 orders, KES 740." in notice.reply.text
        assert notice.parameters == ("2026-05-01", "2", "KES 740")

    clock.now = nairobi(DAY, 20, 30)
    await database.transaction(_late_sale, clock.now)  # changes nothing already queued
    assert await summary.tick() is None
    restarted = DailySummary(database, CLOSING, clock)  # knows nothing but the database
    clock.now = nairobi(DAY, 23, 59)
    assert await restarted.tick() is None
    clock.now = nairobi(DAY + timedelta(days=1), 0, 30)
    assert await restarted.tick() is None
    assert await dispatcher.deliver_due() == 0
    assert len(await database.transaction(_summaries)) == 1 + len(MERCHANTS)

    clock.now = nairobi(DAY + timedelta(days=1), 20, 0)
    assert await restarted.tick() == DAY + timedelta(days=1)
    assert await dispatcher.deliver_due() == len(MERCHANTS)
    tomorrow = channels["terminal"].got[-1][1]
    # Nothing was paid on the second day (the order paid at 20:30 on the first came after
    # that day's summary: /report shows it).
    assert tomorrow.parameters == ("2026-05-02", "0", "KES 0")
    assert len(await database.transaction(_summaries)) == 2 * (1 + len(MERCHANTS))


async def test_the_summary_numbers_are_the_orders_tables(database: Database) -> None:
    """Count and total are those of the orders paid that Nairobi day."""
    await database.transaction(_sales)
    queued_at = nairobi(DAY, 20, 0)
    summary = DailySummary(database, CLOSING, Clock(queued_at))
    assert await summary.tick() == DAY
    [row] = await outbox_rows(database.engine)
    count, total = await database.transaction(_paid_on, DAY)
    assert (row["payload"]["count"], row["payload"]["total"]) == (count, total)
    assert (count, total) == (2, 2 * 210 + 160 + 160)
    assert f"{count} orders, {kes(total)}." in row["payload"]["report"]


async def test_started_late_the_same_day_it_still_goes_out(database: Database) -> None:
    """Duka was down at 20:00 and started at 22:10: the merchant still gets the day's."""
    summary = DailySummary(database, CLOSING, Clock(nairobi(DAY, 22, 10)))
    assert await summary.tick() == DAY
    assert [key for key, *_ in await database.transaction(_summaries)] == [summary_key(DAY)]


async def test_duka_serve_sends_the_summary_and_stops_cleanly(
    sqlite_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """Wired into the app: with daily_summary_at set, the merchant chat gets it, and the
    app shuts down with the scheduler running."""
    toml = TEST_TOML.replace(
        '[shop]\nname = "Test Duka"', '[shop]\nname = "Test Duka"\ndaily_summary_at = "20:00"'
    )
    config = make_config(sqlite_url, free_socket.getsockname()[1], tmp_path, toml=toml)
    assert config.daily_summary_at == CLOSING
    terminal = TerminalChannel(show=lambda _: None)
    clock = Clock(nairobi(DAY, 20, 1))
    duka, runner = await start_duka(config, free_socket, clock=clock, terminal=terminal)
    try:
        await wait_until(
            lambda: bool(terminal.messages.get(MERCHANT_CHAT)), what="the daily summary"
        )
        [text] = terminal.messages[MERCHANT_CHAT]
        assert text.endswith("No order was paid 2026-05-01 (Nairobi time).")
        assert await duka.app[DATABASE].transaction(_summaries) == [
            (summary_key(DAY), None, "expanded"),
            (f"{summary_key(DAY)}@terminal:{MERCHANT_CHAT}", f"terminal:{MERCHANT_CHAT}", "sent"),
        ]
    finally:
        await runner.cleanup()
