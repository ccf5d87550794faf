"""Paid orders the shop calls off (/cancel REF why): the money goes back by hand.

Daraja's STK API only takes money in; a reversal is made in the M-Pesa business portal
(or through Safaricom), so Duka keeps the list instead of moving the money.
``cancel_paid_order`` makes a paid order ``refund_pending`` and tells the customer why,
and that the shop will send their money back to their M-Pesa number; ``mark_refunded``
(/refunded REF) closes it and tells the customer the money was sent. Until then /review
lists it (``pending_refunds``).

Any paid order can be called off, whatever its fulfilment step: goods come back faulty or
unwanted after delivery too, and a merchant expects to refund those. Its stock is not
given back (see ``ledger.set_order_statuses``).

Both decisions run in the caller's transaction, change the status only through the
ledger's writer, and are recorded in ``review_actions`` (the reason as the note, which is
where /review reads it). A refusal raises ``ReviewRefused`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, select

from payments import ledger
from payments.outbox import insert_outbox
from payments.phone import mask_msisdn
from payments.review import ReviewRefused, audit, locked_order
from payments.settlement import MessageKind, OutboxMessage
from payments.states import OrderStatus, PaymentStatus
from storage.schema import orders, payments, review_actions

CANCEL_ACTION = "shop_cancel"  # review_actions.action of /cancel
REFUNDED_ACTION = "refunded"
MAX_LISTED = 50

# Why an order that is not paid cannot be called off with a refund, and what to do instead.
_NOT_PAID = {
    OrderStatus.AWAITING_PAYMENT: (
        "order {ref} is not paid; an unpaid order is called off with /resolve {ref} cancel"
    ),
    OrderStatus.NEEDS_REVIEW: (
        "order {ref} is in review; decide its money with /resolve {ref} refund|paid|cancel"
    ),
    OrderStatus.CANCELLED: "order {ref} is cancelled already",
    OrderStatus.REFUND_PENDING: (
        "order {ref} is already cancelled and waiting for its refund; "
        "send /refunded {ref} once the money is sent back"
    ),
    OrderStatus.REFUNDED: "order {ref} is already cancelled and refunded",
}


class AnOrder(Protocol):
    """What a customer's message needs of an order (a ``LockedOrder``, an ``OrderRecord``)."""

    @property
    def id(self) -> int: ...
    @property
    def reference(self) -> str: ...
    @property
    def customer_id(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Received:
    """The money an order received: what goes back, and how the merchant finds it."""

    amount: int
    msisdn: str | None  # the number it came from (None: M-Pesa did not say, as for C2B)
    receipts: tuple[str, ...]  # the M-Pesa receipts a reversal names

    def where(self) -> str:
        """``07XX XXX 678, receipt QKX1A2B3C4`` for the merchant."""
        receipts = ", ".join(self.receipts) or "none recorded"
        return f"{mask_msisdn(self.msisdn)}, receipt {receipts}"


@dataclass(frozen=True, slots=True)
class PendingRefund:
    reference: str
    received: Received
    reason: str
    cancelled_at: datetime | None  # None only for a cancellation with no audit row


def cancel_paid_order(
    conn: Connection, reference: str, reason: str, *, actor: str, now: datetime
) -> str:
    """Call off the paid order ``reference`` for ``reason``: its money is to go back."""
    order = locked_order(conn, reference)
    if order.status is not OrderStatus.PAID:
        raise ReviewRefused(_NOT_PAID[order.status].format(ref=order.reference))
    received = _received(conn, [order.id]).get(order.id) or Received(order.total, None, ())
    audit(conn, actor, "order", order.reference, CANCEL_ACTION, reason, now, order.id)
    ledger.set_order_statuses(conn, [(order.id, OrderStatus.PAID, OrderStatus.REFUND_PENDING)], now)
    insert_outbox(conn, [cancelled_by_shop(order, received.amount, reason)], now)
    return (
        f"order {order.reference} is cancelled and the customer is told; send "
        f"KES {received.amount:,} back to {received.where()}, then /refunded {order.reference}"
    )


def mark_refunded(conn: Connection, reference: str, note: str, *, actor: str, now: datetime) -> str:
    """The shop sent the money of the cancelled order ``reference`` back."""
    order = locked_order(conn, reference)
    if order.status is OrderStatus.REFUNDED:
        raise ReviewRefused(f"order {order.reference} is already marked refunded")
    if order.status is not OrderStatus.REFUND_PENDING:
        raise ReviewRefused(
            f"order {order.reference} is not waiting for a refund; a paid order is called "
            f"off first with /cancel {order.reference} <reason>"
        )
    received = _received(conn, [order.id]).get(order.id) or Received(order.total, None, ())
    audit(conn, actor, "order", order.reference, REFUNDED_ACTION, note, now, order.id)
    ledger.set_order_statuses(
        conn, [(order.id, OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED)], now
    )
    insert_outbox(conn, [refund_sent(order, received.amount, note)], now)
    return (
        f"order {order.reference} is marked refunded (KES {received.amount:,}) and the "
        "customer is told"
    )


def pending_refunds(conn: Connection) -> list[PendingRefund]:
    """Orders the shop called off whose money has not gone back yet, oldest first."""
    rows = conn.execute(
        select(orders.c.id, orders.c.reference, orders.c.total)
        .where(orders.c.status == str(OrderStatus.REFUND_PENDING))
        .order_by(orders.c.id)
        .limit(MAX_LISTED)
    ).all()
    ids = [row.id for row in rows]
    received = _received(conn, ids)
    why: dict[int, tuple[str, datetime]] = {}
    if ids:
        for action in conn.execute(
            select(review_actions.c.order_id, review_actions.c.note, review_actions.c.at)
            .where(review_actions.c.order_id.in_(ids))
            .where(review_actions.c.action == CANCEL_ACTION)
            .order_by(review_actions.c.id)
        ):
            why[action.order_id] = (action.note, action.at)  # the latest one wins
    return [
        PendingRefund(
            reference=row.reference,
            received=received.get(row.id) or Received(row.total, None, ()),
            reason=why.get(row.id, ("", None))[0],
            cancelled_at=why.get(row.id, ("", None))[1],
        )
        for row in rows
    ]


def cancelled_by_shop(order: AnOrder, amount: int, reason: str) -> OutboxMessage:
    """The customer's "the shop cancelled your order; your money will be sent back"."""
    payload = {"order_reference": order.reference, "amount": amount, "reason": reason}
    return _message(MessageKind.ORDER_CANCELLED_BY_SHOP, order, payload)


def refund_sent(order: AnOrder, amount: int, note: str) -> OutboxMessage:
    """The customer's "the shop sent your money back"."""
    payload = {"order_reference": order.reference, "amount": amount, "note": note}
    return _message(MessageKind.ORDER_REFUNDED, order, payload)


def _message(kind: MessageKind, order: AnOrder, payload: dict[str, Any]) -> OutboxMessage:
    # Once per order and kind: an order is cancelled by the shop, and refunded, only once.
    return OutboxMessage(
        kind,
        payment_id=None,
        order_id=order.id,
        customer_id=order.customer_id,
        payload=payload,
        subject=f"refund:{order.id}",
    )


def _received(conn: Connection, order_ids: Sequence[int]) -> dict[int, Received]:
    """The paid payments of these orders, summed per order (a second payment too: all of
    the customer's money for the order goes back)."""
    if not order_ids:
        return {}
    found: dict[int, Received] = {}
    for row in conn.execute(
        select(
            payments.c.order_id,
            payments.c.paid_amount,
            payments.c.amount,
            payments.c.paid_msisdn,
            payments.c.msisdn,
            payments.c.mpesa_receipt,
        )
        .where(payments.c.order_id.in_(order_ids))
        .where(payments.c.status == str(PaymentStatus.PAID))
        .order_by(payments.c.id)
    ):
        so_far = found.get(row.order_id, Received(0, None, ()))
        found[row.order_id] = Received(
            so_far.amount + (row.paid_amount if row.paid_amount is not None else row.amount),
            so_far.msisdn or row.paid_msisdn or row.msisdn or None,
            so_far.receipts + ((row.mpesa_receipt,) if row.mpesa_receipt else ()),
        )
    return found
