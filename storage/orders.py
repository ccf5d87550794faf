"""Customers, orders and chat state: creating and reading them (blocking code for
``Database.transaction``; order *status* changes live in ``payments.ledger``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from storage.references import new_order_reference
from storage.schema import (
    conversations,
    customers,
    inbound_messages,
    message_refs,
    order_items,
    orders,
)

AWAITING_PAYMENT = "awaiting_payment"  # payments.states.OrderStatus.AWAITING_PAYMENT


@dataclass(frozen=True, slots=True)
class NewOrderItem:
    sku: str
    name: str
    unit_price: int  # whole KES
    quantity: int
    product_id: int | None = None

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    reference: str
    customer_id: int
    status: str
    total: int
    created_at: datetime
    paid_at: datetime | None
    fulfilment: str | None = None  # after payment: ready, on_its_way, delivered, collected


@dataclass(frozen=True, slots=True)
class OrderHandover:
    """How an order reaches its customer (bot.handover): picked up, or delivered."""

    way: str  # pickup | delivery
    zone: str | None = None
    address: str | None = None  # typed, or the place a shared location named
    location: tuple[float, float] | None = None  # latitude, longitude


@dataclass(frozen=True, slots=True)
class OrderItemRecord:
    sku: str
    name: str
    unit_price: int
    quantity: int

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    id: int
    channel: str
    chat_id: str
    name: str
    msisdn: str | None
    language: str
    blocked: bool
    last_inbound_at: datetime | None = None


class EmptyOrder(ValueError):
    pass


def get_or_create_customer(
    conn: Connection, channel: str, chat_id: str, name: str, now: datetime
) -> CustomerRecord:
    found = customer_by_chat(conn, channel, chat_id)
    if found is not None:
        return found
    conn.execute(
        insert(customers).values(channel=channel, chat_id=chat_id, name=name[:128], created_at=now)
    )
    created = customer_by_chat(conn, channel, chat_id)
    assert created is not None
    return created


def customer_by_chat(conn: Connection, channel: str, chat_id: str) -> CustomerRecord | None:
    row = conn.execute(
        select(customers).where(customers.c.channel == channel, customers.c.chat_id == chat_id)
    ).first()
    return None if row is None else _customer(row)


def customer_by_id(conn: Connection, customer_id: int) -> CustomerRecord | None:
    row = conn.execute(select(customers).where(customers.c.id == customer_id)).first()
    return None if row is None else _customer(row)


def _customer(r: Row[Any]) -> CustomerRecord:
    return CustomerRecord(
        r.id,
        r.channel,
        r.chat_id,
        r.name,
        r.msisdn,
        r.language,
        r.blocked_at is not None,
        r.last_inbound_at,
    )


def record_inbound(
    conn: Connection, channel: str, chat_id: str, name: str, now: datetime
) -> CustomerRecord:
    """Note that this chat just wrote to us (WhatsApp's 24-hour window opens)."""
    customer = get_or_create_customer(conn, channel, chat_id, name, now)
    update_customer(conn, customer.id, last_inbound_at=now, blocked_at=None)
    return customer


def update_customer(conn: Connection, /, customer_id: int, **values: object) -> None:
    """Set msisdn, language, name or blocked_at."""
    conn.execute(update(customers).where(customers.c.id == customer_id).values(**values))


def create_order(
    conn: Connection,
    customer_id: int,
    items: Sequence[NewOrderItem],
    now: datetime,
    handover: OrderHandover | None = None,
) -> OrderRecord:
    """Insert an order awaiting payment, with a fresh unique reference."""
    if not items or any(i.quantity < 1 or i.unit_price < 1 for i in items):
        raise EmptyOrder("an order needs at least one item with a positive price and quantity")
    total = sum(item.line_total for item in items)
    for _ in range(5):
        reference = new_order_reference()
        try:
            with conn.begin_nested():
                order_id = conn.execute(
                    insert(orders)
                    .values(
                        reference=reference,
                        customer_id=customer_id,
                        status=AWAITING_PAYMENT,
                        total=total,
                        created_at=now,
                        updated_at=now,
                        **_handover_values(handover),
                    )
                    .returning(orders.c.id)
                ).scalar_one()
            break
        except IntegrityError:
            continue  # the reference was taken: draw again
    else:
        raise RuntimeError("could not draw a unique order reference")
    conn.execute(
        insert(order_items),
        [
            {
                "order_id": order_id,
                "product_id": item.product_id,
                "sku": item.sku,
                "name": item.name,
                "unit_price": item.unit_price,
                "quantity": item.quantity,
            }
            for item in items
        ],
    )
    return OrderRecord(order_id, reference, customer_id, AWAITING_PAYMENT, total, now, None)


def _handover_values(handover: OrderHandover | None) -> dict[str, Any]:
    if handover is None:
        return {}
    location = handover.location
    return {
        "handover": handover.way,
        "delivery_zone": handover.zone,
        "delivery_address": handover.address,
        "delivery_location": f"{location[0]:.6f},{location[1]:.6f}" if location else None,
    }


def order_handover(conn: Connection, order_id: int) -> OrderHandover | None:
    """How the order reaches its customer; None when the shop asked nothing."""
    row = conn.execute(
        select(
            orders.c.handover,
            orders.c.delivery_zone,
            orders.c.delivery_address,
            orders.c.delivery_location,
        ).where(orders.c.id == order_id)
    ).first()
    if row is None or row.handover is None:
        return None
    location = None
    if row.delivery_location:
        latitude, _, longitude = row.delivery_location.partition(",")
        location = (float(latitude), float(longitude))
    return OrderHandover(row.handover, row.delivery_zone, row.delivery_address, location)


def get_order(conn: Connection, order_id: int) -> OrderRecord | None:
    row = conn.execute(select(orders).where(orders.c.id == order_id)).first()
    return None if row is None else _order(row)


def order_by_reference(conn: Connection, reference: str) -> OrderRecord | None:
    row = conn.execute(select(orders).where(orders.c.reference == reference)).first()
    return None if row is None else _order(row)


def recent_orders(conn: Connection, customer_id: int, limit: int = 5) -> list[OrderRecord]:
    rows = conn.execute(
        select(orders)
        .where(orders.c.customer_id == customer_id)
        .order_by(orders.c.id.desc())
        .limit(limit)
    )
    return [_order(row) for row in rows]


def _order(r: Row[Any]) -> OrderRecord:
    return OrderRecord(
        r.id, r.reference, r.customer_id, r.status, r.total, r.created_at, r.paid_at, r.fulfilment
    )


def get_order_items(conn: Connection, order_id: int) -> list[OrderItemRecord]:
    rows = conn.execute(
        select(
            order_items.c.sku, order_items.c.name, order_items.c.unit_price, order_items.c.quantity
        )
        .where(order_items.c.order_id == order_id)
        .order_by(order_items.c.id)
    )
    return [OrderItemRecord(r.sku, r.name, r.unit_price, r.quantity) for r in rows]


def load_chat_state(conn: Connection, channel: str, chat_id: str) -> str | None:
    return conn.execute(
        select(conversations.c.state).where(
            conversations.c.channel == channel, conversations.c.chat_id == chat_id
        )
    ).scalar_one_or_none()


def save_chat_state(
    conn: Connection, channel: str, chat_id: str, state: str, now: datetime
) -> None:
    _upsert(
        conn,
        conversations,
        ["channel", "chat_id"],
        {"channel": channel, "chat_id": chat_id, "state": state, "updated_at": now},
        {"state": state, "updated_at": now},
    )


def remember_message(
    conn: Connection, channel: str, chat_id: str, tag: str, message_id: str, now: datetime
) -> None:
    _upsert(
        conn,
        message_refs,
        ["channel", "chat_id", "tag"],
        {
            "channel": channel,
            "chat_id": chat_id,
            "tag": tag,
            "message_id": message_id,
            "created_at": now,
        },
        {"message_id": message_id, "created_at": now},
    )


def remembered_message(conn: Connection, channel: str, chat_id: str, tag: str) -> str | None:
    return conn.execute(
        select(message_refs.c.message_id).where(
            message_refs.c.channel == channel,
            message_refs.c.chat_id == chat_id,
            message_refs.c.tag == tag,
        )
    ).scalar_one_or_none()


def _upsert(
    conn: Connection,
    table: Table,
    keys: list[str],
    values: dict[str, object],
    changes: dict[str, object],
) -> None:
    insert_for = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert_for(table).values(**values)
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))


def claim_inbound(
    conn: Connection, channel: str, messages: Sequence[tuple[str, str]], now: datetime
) -> set[str]:
    """Record inbound (message id, payload)s before acknowledging them; the ids not seen
    before (a redelivery claims nothing). Each stays pending until ``inbound_handled``."""
    insert_for = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    fresh = set()
    for message_id, payload in dict(messages).items():
        statement = insert_for(inbound_messages).values(
            channel=channel, message_id=message_id[:128], received_at=now, payload=payload
        )
        if conn.execute(statement.on_conflict_do_nothing()).rowcount == 1:
            fresh.add(message_id)
    return fresh


def inbound_handled(conn: Connection, channel: str, message_id: str, now: datetime) -> None:
    conn.execute(
        update(inbound_messages)
        .where(inbound_messages.c.channel == channel)
        .where(inbound_messages.c.message_id == message_id[:128])
        .values(handled_at=now)
    )


def pending_inbound(conn: Connection, channel: str, since: datetime) -> list[str]:
    """Payloads acknowledged but never handled (the process stopped), oldest first."""
    rows = conn.execute(
        select(inbound_messages.c.payload)
        .where(inbound_messages.c.channel == channel)
        .where(inbound_messages.c.handled_at.is_(None))
        .where(inbound_messages.c.received_at >= since)
        .order_by(inbound_messages.c.id)
    )
    return [row.payload for row in rows]


def rekey_chat(conn: Connection, channel: str, old_chat_id: str, new_chat_id: str) -> None:
    """Move a chat to a new id (WhatsApp adds a business-scoped id to a known phone), unless
    the new id is already in use: the customer keeps their orders, cart and number."""
    if old_chat_id == new_chat_id or customer_by_chat(conn, channel, new_chat_id) is not None:
        return
    for table in (customers, conversations, message_refs):
        conn.execute(
            update(table)
            .where(table.c.channel == channel, table.c.chat_id == old_chat_id)
            .values(chat_id=new_chat_id)
        )
