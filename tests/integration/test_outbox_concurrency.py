"""The outbox dispatcher in a rush (issue 13): many chats are sent to at once, so a slow
platform round trip does not set the pace, while each chat still gets its messages in
order; and payment results are read before the other messages waiting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection

from bot.channels.base import Notice
from bot.chat.model import Reply
from bot.notifications import OutboxDispatcher, _due, _fan_out_to_merchants
from payments.outbox import insert_outbox
from payments.settlement import MessageKind, OutboxMessage
from storage.engine import Database
from storage.orders import NewOrderItem, create_order, get_or_create_customer

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
MERCHANTS = [f"slow:{i}" for i in range(20)]
ROUND_TRIP = 0.05  # seconds each notify takes, as a distant platform would


@dataclass
class SlowChannel:
    """A platform far away: each message takes a round trip; it records what came, and
    how many were in flight at once."""

    name: str = "slow"
    got: dict[str, list[str]] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        raise AssertionError("the dispatcher notifies; it does not send")

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(ROUND_TRIP)
        finally:
            self.in_flight -= 1
        self.got.setdefault(chat_id, []).append(notice.parameters[0])
        return str(sum(len(v) for v in self.got.values()))


def low_stock(name: str) -> OutboxMessage:
    payload = {"sku": name, "name": name, "left": 1, "low": 2}
    return OutboxMessage(MessageKind.LOW_STOCK, None, None, None, payload, subject=name)


async def test_many_chats_at_once_each_in_order(database: Database) -> None:
    names = ["first", "second", "third"]
    await database.transaction(insert_outbox, [low_stock(n) for n in names], NOW)
    channel = SlowChannel()
    dispatcher = OutboxDispatcher(database, {"slow": channel}, MERCHANTS, lambda: NOW)
    # A pass takes two of a chat's messages (a slow chat must not hold the next pass up).
    assert await dispatcher.deliver_due() == len(MERCHANTS) * 2
    assert channel.got == {m.partition(":")[2]: names[:2] for m in MERCHANTS}
    assert channel.most_in_flight > 1  # not one at a time
    assert await dispatcher.deliver_due() == len(MERCHANTS)
    assert channel.got == {m.partition(":")[2]: names for m in MERCHANTS}
    assert await dispatcher.deliver_due() == 0  # each once


def _queue_in_arrival_order(conn: Connection) -> int:
    """A merchant's low-stock alert first, then a customer's "Paid!"; the latter's id."""
    insert_outbox(conn, [low_stock("unga")], NOW)
    _fan_out_to_merchants(conn, MERCHANTS[:1], NOW)  # the merchant's own copy
    customer = get_or_create_customer(conn, "telegram", "42", "Wanjiru", NOW)
    order = create_order(conn, customer.id, [NewOrderItem("unga", "Unga 2kg", 210, 1)], NOW)
    paid = OutboxMessage(MessageKind.PAYMENT_PAID, 1, order.id, customer.id, {"payment_id": 1})
    insert_outbox(conn, [paid], NOW)
    return order.id


async def test_payment_results_are_read_before_older_messages(database: Database) -> None:
    order_id = await database.transaction(_queue_in_arrival_order)
    due = await database.transaction(_due, NOW, 10)
    assert [(row.kind, row.order_id) for row in due] == [
        (MessageKind.PAYMENT_PAID, order_id),
        (MessageKind.LOW_STOCK, None),
    ]
