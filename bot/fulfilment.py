"""After payment: getting the goods to the customer (ready, on its way, delivered or
collected), moved on by the merchant and told to the customer.

Fulfilment is its own status next to the order's payment status (``orders.fulfilment``,
NULL until the merchant first moves a paid order on), so that nothing in the money path
has to know about it. ``advance`` is its only writer: it checks the table below, writes
the status only if nobody changed it meanwhile, and queues the customer's message in the
same transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, Connection, update

from bot.handover import Handover
from payments.outbox import insert_outbox
from payments.settlement import MessageKind, OutboxMessage
from payments.states import OrderStatus
from storage.orders import OrderRecord, order_by_reference, order_handover
from storage.schema import orders


class Fulfilment(StrEnum):
    NEW = "new"  # paid, not moved on yet (stored as NULL)
    READY = "ready"  # packed: ready to collect, or to send
    ON_ITS_WAY = "on_its_way"
    DELIVERED = "delivered"
    COLLECTED = "collected"


FINAL = frozenset({Fulfilment.DELIVERED, Fulfilment.COLLECTED})

# A small shop skips steps (sends at once, hands over at the counter): any step forward
# is allowed; nothing comes after delivered or collected, and nothing goes back.
TRANSITIONS: dict[Fulfilment, frozenset[Fulfilment]] = {
    Fulfilment.NEW: frozenset(
        {Fulfilment.READY, Fulfilment.ON_ITS_WAY, Fulfilment.DELIVERED, Fulfilment.COLLECTED}
    ),
    Fulfilment.READY: frozenset(
        {Fulfilment.ON_ITS_WAY, Fulfilment.DELIVERED, Fulfilment.COLLECTED}
    ),
    Fulfilment.ON_ITS_WAY: frozenset({Fulfilment.DELIVERED}),
    Fulfilment.DELIVERED: frozenset(),
    Fulfilment.COLLECTED: frozenset(),
}


# What the customer chose at checkout rules out some steps: nobody collects a delivery.
_NOT_FOR: dict[str, frozenset[Fulfilment]] = {
    Handover.PICKUP: frozenset({Fulfilment.ON_ITS_WAY, Fulfilment.DELIVERED}),
    Handover.DELIVERY: frozenset({Fulfilment.COLLECTED}),
}


class NotMovedOn(Exception):
    """The order cannot move to that step; ``str(exc)`` says why, for the merchant."""


def current(stored: str | None) -> Fulfilment:
    return Fulfilment(stored) if stored else Fulfilment.NEW


def advance(conn: Connection, reference: str, to: Fulfilment, now: datetime) -> str:
    """Move the paid order ``reference`` on to ``to`` and queue the customer's message;
    the order's reference. Raises ``NotMovedOn``, having changed nothing."""
    order = order_by_reference(conn, reference)
    if order is None:
        raise NotMovedOn(f"there is no order {reference}")
    if order.status != OrderStatus.PAID:
        raise NotMovedOn(f"order {order.reference} is not paid ({order.status})")
    was = current(order.fulfilment)
    if to not in TRANSITIONS[was]:
        raise NotMovedOn(f"order {order.reference} is already {was.replace('_', ' ')}")
    way = order_handover(conn, order.id)
    if way is not None and to in _NOT_FOR[way.way]:
        raise NotMovedOn(f"order {order.reference} is for {way.way}, not {to.replace('_', ' ')}")
    moved = conn.execute(
        update(orders)
        .where(orders.c.id == order.id, _stored_as(was))
        .values(fulfilment=str(to), updated_at=now)
    )
    if moved.rowcount != 1:  # another merchant moved it at the same moment
        raise NotMovedOn(f"order {order.reference} was just moved on by someone else")
    insert_outbox(conn, [progress_message(order, to)], now)
    return order.reference


def progress_message(order: OrderRecord, to: Fulfilment) -> OutboxMessage:
    """The customer's "your order is on its way" (once per order and step)."""
    return OutboxMessage(
        MessageKind.ORDER_PROGRESS,
        payment_id=None,
        order_id=order.id,
        customer_id=order.customer_id,
        payload={"order_reference": order.reference, "fulfilment": str(to)},
        subject=f"fulfilment:{order.id}:{to}",
    )


def _stored_as(status: Fulfilment) -> ColumnElement[bool]:
    column = orders.c.fulfilment
    return column.is_(None) if status is Fulfilment.NEW else column == str(status)
