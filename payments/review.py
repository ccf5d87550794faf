"""The merchant's way out of review: decisions about money made by hand, with an audit row.

``match`` attaches unmatched money to an order (which is then paid exactly as by a
callback); ``resolve_order`` settles an order in review (or one whose attempt was never
confirmed) as paid, refunded or cancelled; ``resolve_unmatched`` closes unmatched money
as refunded or kept. Each runs in the caller's transaction, changes statuses only
through the ledger's and ``unmatched``'s writers, tells the customer through the
outbox, and records who decided what in ``review_actions``. A refusal raises
``ReviewRefused`` with a sentence for the merchant and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select

from payments import arrived, ledger
from payments.outbox import insert_outbox
from payments.phone import mask_msisdn
from payments.results import ResultSource
from payments.settlement import (
    UNCONFIRMED_CODE,
    ArrivedMoney,
    MessageKind,
    OutboxMessage,
    PaymentSnapshot,
    confirm_by_merchant,
    paid_notice,
)
from payments.states import OrderStatus, PaymentStatus
from payments.unmatched import (
    UnmatchedPayment,
    UnmatchedStatus,
    open_unmatched,
    set_status,
    unmatched_by_receipt,
)
from storage.schema import OPEN_PAYMENT_STATUSES, orders, payments, review_actions

# Attempts never confirmed are listed for review this long.
UNCONFIRMED_LOOKBACK = timedelta(days=7)


READABLE = {
    OrderStatus.AWAITING_PAYMENT: "waiting for payment",
    OrderStatus.PAID: "paid",
    OrderStatus.NEEDS_REVIEW: "in review",
    OrderStatus.CANCELLED: "cancelled",
    OrderStatus.REFUND_PENDING: "cancelled by you, waiting for its refund",
    OrderStatus.REFUNDED: "cancelled by you and refunded",
}


class ReviewRefused(Exception):
    """The decision cannot be made; ``str(exc)`` tells the merchant why."""


class OrderDecision(StrEnum):
    PAID = "paid"  # the money is right: the order counts as paid
    REFUND = "refund"  # the merchant returns the money; the order is cancelled
    CANCEL = "cancel"  # the order is called off


class UnmatchedDecision(StrEnum):
    REFUNDED = "refunded"
    KEPT = "kept"


@dataclass(frozen=True, slots=True)
class LockedOrder:
    id: int
    reference: str
    customer_id: int
    status: OrderStatus
    total: int


def match(conn: Connection, receipt: str, reference: str, *, actor: str, now: datetime) -> str:
    """Attach unmatched money to an order awaiting payment, whose total it must equal."""
    unmatched = _open_unmatched(conn, receipt)
    order = locked_order(conn, reference)
    if order.status is not OrderStatus.AWAITING_PAYMENT:
        raise ReviewRefused(
            f"order {order.reference} is {READABLE[order.status]}, not waiting for payment; "
            f"use /resolve {order.reference}"
        )
    if _has_open_attempt(conn, order.id):
        raise ReviewRefused(
            f"a payment for order {order.reference} is under way; wait for its result"
        )
    received = Decimal(unmatched.amount_exact)
    if received != order.total:
        difference = abs(received - order.total)
        side = "more" if received > order.total else "less"
        raise ReviewRefused(
            f"{unmatched.receipt} is {_kes(received)} but order {order.reference} is "
            f"{_kes(order.total)}: {_kes(difference)} {side} than the order"
        )
    money = ArrivedMoney(
        source=unmatched.source,
        receipt=unmatched.receipt,
        amount=received,
        msisdn=unmatched.msisdn,
        masked_phone=unmatched.masked_phone,
        transaction_at=unmatched.transaction_at,
        checkout_request_id=unmatched.checkout_request_id,
        account=unmatched.account,
    )
    arrived.record_arrived_payment(conn, order.id, money, ResultSource.MATCH, now)
    if not set_status(
        conn, unmatched, UnmatchedStatus.MATCHED, actor=actor, note="", now=now, order_id=order.id
    ):
        raise ReviewRefused(f"{unmatched.receipt} was closed a moment ago")
    audit(
        conn, actor, "unmatched", unmatched.receipt, f"match {order.reference}", "", now, order.id
    )
    return f"{unmatched.receipt} attached to order {order.reference}, which is now paid"


def resolve_order(
    conn: Connection,
    reference: str,
    decision: OrderDecision,
    note: str,
    *,
    actor: str,
    now: datetime,
) -> str:
    """Settle an order in review, or one still awaiting payment after an unconfirmed attempt."""
    order = locked_order(conn, reference)
    if order.status not in {OrderStatus.NEEDS_REVIEW, OrderStatus.AWAITING_PAYMENT}:
        raise ReviewRefused(
            f"order {order.reference} is {READABLE[order.status]}; there is nothing to decide"
        )
    unconfirmed = None
    if order.status is OrderStatus.AWAITING_PAYMENT:
        if _has_open_attempt(conn, order.id):
            raise ReviewRefused(
                f"a payment for order {order.reference} is under way; wait for its result"
            )
        unconfirmed = _unconfirmed_attempt(conn, order.id)
        if unconfirmed is None and decision is not OrderDecision.CANCEL:
            raise ReviewRefused(
                f"order {order.reference} has no payment to mark {decision}: it is waiting "
                f"for payment (attach unmatched money with /match, or cancel it)"
            )
    audit_id = audit(conn, actor, "order", order.reference, str(decision), note, now, order.id)
    if decision is OrderDecision.PAID and unconfirmed is not None:
        # The attempt itself becomes paid, so that its late callback only adds the receipt
        # instead of counting the same money twice.
        settlement = confirm_by_merchant(unconfirmed)
        ledger.write_payment_changes(conn, [(unconfirmed, settlement.after)], now)
        ledger.write_order_changes(conn, [(unconfirmed, settlement.after)], now)
        insert_outbox(conn, settlement.messages, now)
        return f"order {order.reference} is now paid (the attempt the shop confirmed)"
    target = OrderStatus.PAID if decision is OrderDecision.PAID else OrderStatus.CANCELLED
    ledger.set_order_statuses(conn, [(order.id, order.status, target)], now)
    paid = _latest_paid(conn, order.id)
    if decision is OrderDecision.PAID and paid is not None:
        # The money is on record: the customer gets the same "Paid!" as after a callback.
        insert_outbox(conn, [paid_notice(replace(paid, order_status=target))], now)
    else:
        payload: dict[str, Any] = {
            "order_reference": order.reference,
            "action": str(decision),
            "note": note,
            "paid_amount": (paid.paid_amount or 0)
            if paid
            else (unconfirmed.amount if unconfirmed else 0),
        }
        message = OutboxMessage(
            MessageKind.ORDER_RESOLVED,
            payment_id=None,
            order_id=order.id,
            customer_id=order.customer_id,
            payload=payload,
            subject=f"review:{audit_id}",
        )
        insert_outbox(conn, [message], now)
    return f"order {order.reference} is now {READABLE[target]} ({decision})"


def resolve_unmatched(
    conn: Connection,
    receipt: str,
    decision: UnmatchedDecision,
    note: str,
    *,
    actor: str,
    now: datetime,
) -> str:
    unmatched = _open_unmatched(conn, receipt)
    if not set_status(
        conn, unmatched, UnmatchedStatus(str(decision)), actor=actor, note=note, now=now
    ):
        raise ReviewRefused(f"{unmatched.receipt} was closed a moment ago")
    audit(conn, actor, "unmatched", unmatched.receipt, str(decision), note, now, None)
    return f"{unmatched.receipt} ({_kes(Decimal(unmatched.amount_exact))}) marked {decision}"


def is_unmatched_receipt(conn: Connection, text: str) -> bool:
    return unmatched_by_receipt(conn, text) is not None


@dataclass(frozen=True, slots=True)
class UnconfirmedAttempt:
    reference: str
    amount: int
    msisdn: str
    created_at: datetime
    same_money: tuple[str, ...]  # receipts of open unmatched money with this phone and amount


@dataclass(frozen=True, slots=True)
class ReviewList:
    orders: list[tuple[str, str, int, str]]  # reference, status, total, why
    unmatched: list[UnmatchedPayment]
    unconfirmed: list[UnconfirmedAttempt]


def review_list(conn: Connection, now: datetime) -> ReviewList:
    """Everything waiting for the merchant's decision."""
    in_review = conn.execute(
        select(orders.c.id, orders.c.reference, orders.c.status, orders.c.total)
        .where(orders.c.status == str(OrderStatus.NEEDS_REVIEW))
        .order_by(orders.c.id)
        .limit(50)
    ).all()
    review_orders = []
    for row in in_review:
        paid = conn.execute(
            select(payments.c.paid_amount, payments.c.mpesa_receipt)
            .where(payments.c.order_id == row.id, payments.c.status == str(PaymentStatus.PAID))
            .order_by(payments.c.id)
        ).all()
        why = ", ".join(f"KES {p.paid_amount:,} ({p.mpesa_receipt or 'no receipt'})" for p in paid)
        review_orders.append((row.reference, str(row.status), row.total, f"paid {why or '-'}"))
    money = open_unmatched(conn)
    unconfirmed_rows = conn.execute(
        select(payments.c.amount, payments.c.msisdn, payments.c.created_at, orders.c.reference)
        .join(orders, orders.c.id == payments.c.order_id)
        .where(payments.c.result_code == UNCONFIRMED_CODE)
        .where(orders.c.status == str(OrderStatus.AWAITING_PAYMENT))
        .where(payments.c.created_at >= now - UNCONFIRMED_LOOKBACK)
        .order_by(payments.c.id)
        .limit(50)
    ).all()
    unconfirmed = [
        UnconfirmedAttempt(
            row.reference,
            row.amount,
            row.msisdn,
            row.created_at,
            tuple(m.receipt for m in money if m.msisdn == row.msisdn and m.amount == row.amount),
        )
        for row in unconfirmed_rows
    ]
    return ReviewList(review_orders, money, unconfirmed)


def masked(attempt: UnconfirmedAttempt) -> str:
    return mask_msisdn(attempt.msisdn)


def _kes(amount: Decimal | int) -> str:
    """``KES 1,250``, or ``KES 1,250.50`` when there are cents (Daraja writes ``500.00``)."""
    whole = Decimal(amount)
    if whole == whole.to_integral_value():
        return f"KES {int(whole):,}"
    return f"KES {whole:,.2f}"


def _open_unmatched(conn: Connection, receipt: str) -> UnmatchedPayment:
    unmatched = unmatched_by_receipt(conn, receipt)
    if unmatched is None:
        raise ReviewRefused(f"no unmatched payment has receipt {receipt.upper()}")
    if unmatched.status is not UnmatchedStatus.OPEN:
        raise ReviewRefused(f"{unmatched.receipt} is already {unmatched.status}")
    return unmatched


def locked_order(conn: Connection, reference: str) -> LockedOrder:
    """The order ``reference``, locked for the decision (PostgreSQL); refused if none."""
    row = conn.execute(
        select(
            orders.c.id, orders.c.reference, orders.c.customer_id, orders.c.status, orders.c.total
        )
        .where(orders.c.reference == reference)
        .with_for_update()
    ).first()
    if row is None:
        raise ReviewRefused(f"no order {reference}")
    return LockedOrder(row.id, row.reference, row.customer_id, OrderStatus(row.status), row.total)


def _has_open_attempt(conn: Connection, order_id: int) -> bool:
    return (
        conn.execute(
            select(payments.c.id)
            .where(payments.c.order_id == order_id, payments.c.status.in_(OPEN_PAYMENT_STATUSES))
            .limit(1)
        ).first()
        is not None
    )


def _latest_paid(conn: Connection, order_id: int) -> PaymentSnapshot | None:
    return _latest(conn, order_id, payments.c.status == str(PaymentStatus.PAID))


def _unconfirmed_attempt(conn: Connection, order_id: int) -> PaymentSnapshot | None:
    """The order's latest attempt that ended without M-Pesa's word, if that is its last."""
    latest = _latest(conn, order_id, payments.c.id.is_not(None))
    if latest is None or latest.result_code != UNCONFIRMED_CODE:
        return None
    return latest if latest.status is PaymentStatus.EXPIRED else None


def _latest(conn: Connection, order_id: int, condition: Any) -> PaymentSnapshot | None:
    payment_id = conn.execute(
        select(payments.c.id)
        .where(payments.c.order_id == order_id, condition)
        .order_by(payments.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if payment_id is None else ledger.snapshot_by_id(conn, payment_id)


def audit(
    conn: Connection,
    actor: str,
    subject: str,
    reference: str,
    action: str,
    note: str,
    now: datetime,
    order_id: int | None,
) -> int:
    """Record who decided what about an order or money (``review_actions``); its id."""
    audit_id = conn.execute(
        insert(review_actions)
        .values(
            at=now,
            actor=actor[:80],
            subject=subject,
            reference=reference[:32],
            action=action[:16],
            note=note[:500],
            order_id=order_id,
        )
        .returning(review_actions.c.id)
    ).scalar_one()
    return int(audit_id)
