"""Unmatched money: paid results that cannot be tied to exactly one order.

An STK callback whose attempt is unknown (or several lost pushes fit it), or a C2B
payment for an account number that names no payable order, or for the wrong amount.
The money is in the till either way, so it is never left invisible: it becomes a row
here, the merchant is told at once, and it stays ``open`` until the merchant attaches it
to an order (``matched``) or settles it by hand (``refunded``, ``kept``).
``set_status`` is the only code that changes an unmatched payment's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from payments.outbox import insert_outbox
from payments.settlement import ArrivedMoney, MessageKind, OutboxMessage
from storage.schema import payments, unmatched_payments


class UnmatchedReason(StrEnum):
    SEVERAL_ATTEMPTS_FIT = "several_attempts_fit"  # lost pushes, same phone and amount
    NO_ATTEMPT = "no_attempt"  # no push of ours has its id, and none fits phone and amount
    NO_PHONE = "no_phone"  # no PhoneNumber in the callback: nothing to match a lost push by
    UNKNOWN_ACCOUNT = "unknown_account"  # C2B: the account number names no order
    WRONG_AMOUNT = "wrong_amount"  # C2B: not the order's total
    ORDER_NOT_PAYABLE = "order_not_payable"  # C2B: the order is paid, cancelled or in review
    SECOND_PAYMENT = "second_payment"  # another receipt for an attempt already paid
    NOT_APPLIED = "not_applied"  # a paid callback that kept failing to apply (see the log)


class UnmatchedStatus(StrEnum):
    OPEN = "open"
    MATCHED = "matched"
    REFUNDED = "refunded"
    KEPT = "kept"


@dataclass(frozen=True, slots=True)
class UnmatchedPayment:
    id: int
    source: str
    receipt: str
    amount: int
    amount_exact: str
    msisdn: str | None
    masked_phone: str
    account: str
    checkout_request_id: str | None
    reason: str
    received_at: datetime
    transaction_at: datetime | None
    status: UnmatchedStatus


_INSERT = {
    dialect: insert_for(unmatched_payments)
    .on_conflict_do_nothing(index_elements=["receipt"])
    .returning(unmatched_payments.c.id)
    for dialect, insert_for in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def record_unmatched(
    conn: Connection, money: ArrivedMoney, reason: UnmatchedReason, raw: str, now: datetime
) -> int | None:
    """Keep the money as unmatched and queue the merchant's alert; None if it was already
    recorded (the same receipt twice: a duplicated callback or confirmation), here or on a
    payment."""
    on_payment = conn.execute(
        select(payments.c.id).where(payments.c.mpesa_receipt == money.receipt).limit(1)
    ).first()
    if on_payment is not None:
        return None
    unmatched_id = conn.execute(
        _INSERT[conn.dialect.name],
        {
            "source": money.source,
            "receipt": money.receipt,
            "amount": int(money.amount),
            "amount_exact": str(money.amount),
            "msisdn": money.msisdn,
            "masked_phone": money.masked_phone,
            "account": money.account[:32],
            "checkout_request_id": money.checkout_request_id,
            "reason": str(reason),
            "raw": raw,
            "transaction_at": money.transaction_at,
            "received_at": now,
            "status": str(UnmatchedStatus.OPEN),
        },
    ).scalar_one_or_none()
    if unmatched_id is None:
        return None
    payload: dict[str, Any] = {
        "unmatched_id": unmatched_id,
        "receipt": money.receipt,
        "paid_amount": int(money.amount),
        "paid_amount_exact": str(money.amount),
        "masked_phone": money.masked_phone,
        "account": money.account,
        "reason": str(reason),
    }
    alert = OutboxMessage(
        MessageKind.UNMATCHED_PAYMENT,
        payment_id=None,
        order_id=None,
        customer_id=None,
        payload=payload,
        subject=f"unmatched:{unmatched_id}",
    )
    insert_outbox(conn, [alert], now)
    return int(unmatched_id)


def open_unmatched(conn: Connection, limit: int = 50) -> list[UnmatchedPayment]:
    rows = conn.execute(
        select(unmatched_payments)
        .where(unmatched_payments.c.status == str(UnmatchedStatus.OPEN))
        .order_by(unmatched_payments.c.id)
        .limit(limit)
    )
    return [_record(row) for row in rows]


def unmatched_by_receipt(conn: Connection, receipt: str) -> UnmatchedPayment | None:
    row = conn.execute(
        select(unmatched_payments)
        .where(unmatched_payments.c.receipt == receipt.strip().upper())
        .with_for_update()
    ).first()
    return None if row is None else _record(row)


def set_status(
    conn: Connection,
    unmatched: UnmatchedPayment,
    status: UnmatchedStatus,
    *,
    actor: str,
    note: str,
    now: datetime,
    order_id: int | None = None,
) -> bool:
    """Close an open unmatched payment; False if someone else closed it first."""
    if unmatched.status is not UnmatchedStatus.OPEN or status is UnmatchedStatus.OPEN:
        return False
    changed = conn.execute(
        update(unmatched_payments)
        .where(unmatched_payments.c.id == unmatched.id)
        .where(unmatched_payments.c.status == str(UnmatchedStatus.OPEN))
        .values(
            status=str(status),
            order_id=order_id,
            resolved_at=now,
            resolved_by=actor[:80],
            note=note,
        )
    ).rowcount
    return bool(changed)


def _record(row: Row[Any]) -> UnmatchedPayment:
    return UnmatchedPayment(
        id=row.id,
        source=row.source,
        receipt=row.receipt,
        amount=row.amount,
        amount_exact=row.amount_exact,
        msisdn=row.msisdn,
        masked_phone=row.masked_phone,
        account=row.account,
        checkout_request_id=row.checkout_request_id,
        reason=row.reason,
        received_at=row.received_at,
        transaction_at=row.transaction_at,
        status=UnmatchedStatus(row.status),
    )
