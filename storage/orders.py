"""Customers, products and orders: creating and reading them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.references import new_order_reference
from storage.schema import customers, order_items, orders

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


@dataclass(frozen=True, slots=True)
class OrderItemRecord:
    sku: str
    name: str
    unit_price: int
    quantity: int

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


class EmptyOrder(ValueError):
    pass


async def get_or_create_customer(
    conn: AsyncConnection, channel: str, chat_id: str, name: str, now: datetime
) -> int:
    query = select(customers.c.id).where(
        customers.c.channel == channel, customers.c.chat_id == chat_id
    )
    existing = (await conn.execute(query)).scalar_one_or_none()
    if existing is not None:
        return int(existing)
    result = await conn.execute(
        insert(customers)
        .values(channel=channel, chat_id=chat_id, name=name, created_at=now)
        .returning(customers.c.id)
    )
    return int(result.scalar_one())


async def create_order(
    conn: AsyncConnection, customer_id: int, items: Sequence[NewOrderItem], now: datetime
) -> OrderRecord:
    """Insert an order awaiting payment, with a fresh unique reference."""
    if not items or any(i.quantity < 1 or i.unit_price < 1 for i in items):
        raise EmptyOrder("an order needs at least one item with a positive price and quantity")
    total = sum(item.line_total for item in items)
    for _ in range(5):
        reference = new_order_reference()
        try:
            async with conn.begin_nested():
                order_id = (
                    await conn.execute(
                        insert(orders)
                        .values(
                            reference=reference,
                            customer_id=customer_id,
                            status=AWAITING_PAYMENT,
                            total=total,
                            created_at=now,
                            updated_at=now,
                        )
                        .returning(orders.c.id)
                    )
                ).scalar_one()
            break
        except IntegrityError:
            continue  # the reference was taken: draw again
    else:
        raise RuntimeError("could not draw a unique order reference")
    await conn.execute(
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


async def get_order(conn: AsyncConnection, order_id: int) -> OrderRecord | None:
    row = (await conn.execute(select(orders).where(orders.c.id == order_id))).first()
    if row is None:
        return None
    return OrderRecord(
        row.id, row.reference, row.customer_id, row.status, row.total, row.created_at, row.paid_at
    )


async def get_order_items(conn: AsyncConnection, order_id: int) -> list[OrderItemRecord]:
    rows = await conn.execute(
        select(
            order_items.c.sku, order_items.c.name, order_items.c.unit_price, order_items.c.quantity
        )
        .where(order_items.c.order_id == order_id)
        .order_by(order_items.c.id)
    )
    return [OrderItemRecord(r.sku, r.name, r.unit_price, r.quantity) for r in rows]
