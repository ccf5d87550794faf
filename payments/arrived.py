"""Money that arrives without an STK callback of its own: a Paybill (C2B) payment, or
unmatched money the merchant attaches to an order (/match).

It pays the order exactly as a callback would (``settle`` decides; same messages). When
the order has an STK attempt still open, the money is that attempt's: the customer may
have paid by hand while the prompt was up, or Safaricom may send the Paybill
confirmation of the STK payment itself. Settling the open attempt keeps one payment per
money: its own callback later is a duplicate (same receipt), a failure changes nothing,
and a different receipt is a second payment (unmatched money, see ``ledger``).
Otherwise the money is recorded as a new payment created ``paid`` (see ``states``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from payments.ledger import snapshot_by_id, write_order_changes, write_payment_changes
from payments.outbox import insert_outbox
from payments.results import ResultSource
from payments.settlement import ArrivedMoney, PaymentSnapshot, Settlement, settle
from payments.states import OrderStatus, PaymentStatus
from storage.schema import orders, payments, unmatched_payments

# Attempts whose money this can be: the push went out (``created`` may still be sending).
_SETTLEABLE = (str(PaymentStatus.PENDING), str(PaymentStatus.UNKNOWN))


def receipt_is_known(conn: Connection, receipt: str) -> bool:
    """Whether a payment or an unmatched payment already carries this M-Pesa receipt."""
    for table, column in (
        (payments, payments.c.mpesa_receipt),
        (unmatched_payments, unmatched_payments.c.receipt),
    ):
        if conn.execute(select(table.c.id).where(column == receipt).limit(1)).first():
            return True
    return False


def record_arrived_payment(
    conn: Connection, order_id: int, money: ArrivedMoney, source: ResultSource, now: datetime
) -> Settlement:
    """Pay ``order_id`` with ``money``: its open attempt's, else a new payment's."""
    order = conn.execute(
        select(orders.c.customer_id, orders.c.reference, orders.c.status, orders.c.total)
        .where(orders.c.id == order_id)
        .with_for_update()
    ).one()
    open_attempt = conn.execute(
        select(payments.c.id)
        .where(payments.c.order_id == order_id, payments.c.status.in_(_SETTLEABLE))
        .order_by(payments.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    snapshot = snapshot_by_id(conn, open_attempt) if open_attempt is not None else None
    if snapshot is not None:
        stored = snapshot
    else:
        snapshot = _new_payment(conn, order_id, order, money, now)
        stored = replace(snapshot, status=PaymentStatus.PAID)  # as inserted
    result = money.as_result(source, snapshot.checkout_request_id or "")
    settlement = settle(snapshot, result)
    write_payment_changes(conn, [(stored, settlement.after)], now)
    write_order_changes(conn, [(snapshot, settlement.after)], now)
    # C2B masks the number: the merchant sees Daraja's masked form rather than nothing.
    messages = [
        replace(m, payload={**m.payload, "masked_phone": money.masked_phone})
        if not money.msisdn
        else m
        for m in settlement.messages
    ]
    insert_outbox(conn, messages, now)
    return settlement


def _new_payment(
    conn: Connection, order_id: int, order: Any, money: ArrivedMoney, now: datetime
) -> PaymentSnapshot:
    """Insert the payment (created ``paid``: it records money that moved) and return it as
    ``settle`` should see it: an attempt just made."""
    msisdn = money.msisdn or ""  # C2B masks the number; the receipt identifies the money
    payment_id = conn.execute(
        insert(payments)
        .values(
            order_id=order_id,
            status=str(PaymentStatus.PAID),
            msisdn=msisdn,
            amount=order.total,
            created_at=now,
            updated_at=now,
        )
        .returning(payments.c.id)
    ).scalar_one()
    return PaymentSnapshot(
        payment_id=int(payment_id),
        order_id=order_id,
        customer_id=order.customer_id,
        order_reference=order.reference,
        order_status=OrderStatus(order.status),
        order_total=order.total,
        status=PaymentStatus.CREATED,
        amount=order.total,
        msisdn=msisdn,
        checkout_request_id=money.checkout_request_id,
    )
