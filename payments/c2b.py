"""C2B (a customer pays the Paybill by hand): reading Daraja's C2B bodies, and applying a
confirmation (daraja.md §8).

Every field of a C2B body is a string, and the MSISDN is masked (``2547 ***** 126``), so a
payment is matched on the account number the customer typed (``BillRefNumber``, case
and spaces normalised) and the amount, and is kept idempotent by its ``TransID``. A
payment for an order awaiting exactly that amount pays it through the same ledger path
as an STK callback (same messages); anything else becomes unmatched money.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select

from payments import arrived, ledger
from payments.credentials import parse_daraja_timestamp
from payments.phone import mask_masked, mask_msisdn
from payments.results import (
    MalformedCallback,
    ResultSource,
    load_daraja_json,
    parse_amount,
    storable,
)
from payments.settlement import ArrivedMoney, EventStatus
from payments.states import OrderStatus
from payments.unmatched import UnmatchedReason, record_unmatched
from storage.references import normalize_reference
from storage.schema import orders

_TRANS_ID = re.compile(r"[A-Z0-9]{6,32}")


@dataclass(frozen=True, slots=True)
class C2BPayment:
    trans_id: str
    amount: Decimal
    bill_ref: str  # as typed by the customer
    masked_phone: str
    transaction_at: datetime | None
    short_code: str

    @property
    def money(self) -> ArrivedMoney:
        return ArrivedMoney(
            source="c2b",
            receipt=self.trans_id,
            amount=self.amount,
            msisdn=None,
            masked_phone=self.masked_phone,
            transaction_at=self.transaction_at,
            account=self.bill_ref,
        )


def parse_c2b(body: bytes) -> C2BPayment:
    """A C2B validation or confirmation body, or ``MalformedCallback`` saying why."""
    document = load_daraja_json(body, what="value")
    if not isinstance(document, dict):
        raise MalformedCallback("top level is not an object")
    trans_id = _text(document, "TransID", 32).upper()
    if not _TRANS_ID.fullmatch(trans_id):
        raise MalformedCallback("TransID is not an M-Pesa transaction id")
    try:
        transaction_at = parse_daraja_timestamp(str(document.get("TransTime", "")).strip())
    except ValueError:
        transaction_at = None  # the money matters more than a garbled (or missing) time
    return C2BPayment(
        trans_id=trans_id,
        amount=parse_amount(_text(document, "TransAmount", 32), "TransAmount"),
        bill_ref=_text(document, "BillRefNumber", 32, required=False),
        masked_phone=_shown_phone(_text(document, "MSISDN", 64, required=False)),
        transaction_at=transaction_at,
        short_code=_text(document, "BusinessShortCode", 16, required=False),
    )


class Verdict(StrEnum):
    """What a payment for this account and amount would do (validation's answer)."""

    PAYS_ORDER = "pays_order"
    UNKNOWN_ACCOUNT = "unknown_account"
    WRONG_AMOUNT = "wrong_amount"
    ORDER_NOT_PAYABLE = "order_not_payable"


@dataclass(frozen=True, slots=True)
class _Target:
    verdict: Verdict
    order_id: int | None


def judge(conn: Connection, payment: C2BPayment, *, lock: bool = False) -> _Target:
    """Which order this payment pays, if any, and why not."""
    if not payment.bill_ref.strip():
        return _Target(Verdict.UNKNOWN_ACCOUNT, None)
    query = select(orders.c.id, orders.c.status, orders.c.total).where(
        orders.c.reference == normalize_reference(payment.bill_ref)
    )
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        return _Target(Verdict.UNKNOWN_ACCOUNT, None)
    if row.status != OrderStatus.AWAITING_PAYMENT:
        return _Target(Verdict.ORDER_NOT_PAYABLE, row.id)
    if payment.amount != row.total:
        return _Target(Verdict.WRONG_AMOUNT, row.id)
    return _Target(Verdict.PAYS_ORDER, row.id)


_UNMATCHED_REASON = {
    Verdict.UNKNOWN_ACCOUNT: UnmatchedReason.UNKNOWN_ACCOUNT,
    Verdict.WRONG_AMOUNT: UnmatchedReason.WRONG_AMOUNT,
    Verdict.ORDER_NOT_PAYABLE: UnmatchedReason.ORDER_NOT_PAYABLE,
}


def apply_confirmation(
    conn: Connection,
    payment: C2BPayment,
    raw: str,
    now: datetime,
    *,
    source_ip: str | None = None,
) -> EventStatus:
    """Store the confirmation (with the address it came from) and pay its order, or keep
    it as unmatched money; a TransID seen before changes nothing. One transaction, so the
    money and its messages commit together."""
    store = functools.partial(_store, conn, raw, now=now, source_ip=source_ip)
    # The order is locked first: a duplicate arriving at the same moment waits here, and
    # then sees the receipt the first one recorded.
    target = judge(conn, payment, lock=True)
    if arrived.receipt_is_known(conn, payment.trans_id):
        store(EventStatus.DUPLICATE, f"TransID {payment.trans_id} seen before")
        return EventStatus.DUPLICATE
    if target.verdict is Verdict.PAYS_ORDER and target.order_id is not None:
        settlement = arrived.record_arrived_payment(
            conn, target.order_id, payment.money, ResultSource.C2B, now
        )
        store(EventStatus.APPLIED, settlement.note, payment_id=settlement.after.payment_id)
        return EventStatus.APPLIED
    reason = _UNMATCHED_REASON[target.verdict]
    if record_unmatched(conn, payment.money, reason, raw, now) is None:
        # A copy arriving at the same moment recorded it first (no order row to wait on).
        store(EventStatus.DUPLICATE, f"TransID {payment.trans_id} seen before")
        return EventStatus.DUPLICATE
    store(EventStatus.UNMATCHED, str(reason))
    return EventStatus.UNMATCHED


def store_rejected(
    conn: Connection, raw: str, reason: str, now: datetime, *, source_ip: str | None = None
) -> None:
    _store(conn, raw, EventStatus.REJECTED, reason, now=now, source_ip=source_ip)


def store_failed(
    conn: Connection, raw: str, reason: str, now: datetime, *, source_ip: str | None = None
) -> None:
    """A confirmation that could not be applied (Daraja was answered 503): kept for a person."""
    _store(conn, raw, EventStatus.ERROR, reason, now=now, source_ip=source_ip)


def _store(
    conn: Connection,
    raw: str,
    status: EventStatus,
    note: str,
    *,
    now: datetime,
    source_ip: str | None,
    payment_id: int | None = None,
) -> None:
    event = ledger.NewEvent("c2b", raw, None, status, note, payment_id, source_ip=source_ip)
    ledger.insert_events(conn, [event], now)


def _shown_phone(msisdn: str) -> str:
    """What the merchant may see of the payer's number: v2 masks it (``2547 ***** 126``,
    shown in our style ``07XX XXX 126``),
    v1 sends a SHA-256 hash (easy to reverse over Kenyan numbers, useless to read), and a
    full number, should one come, is masked like every other."""
    if re.fullmatch(r"254\d{9}", msisdn):
        return mask_msisdn(msisdn)
    if re.fullmatch(r"[0-9a-fA-F]{64}", msisdn):
        return "hidden by M-Pesa"
    if "*" in msisdn:
        return mask_masked(msisdn) or msisdn
    return "***"


def _text(document: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str:
    value = document.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise MalformedCallback(f"{key} is missing or empty")
        return ""
    if isinstance(value, bool | dict | list):
        raise MalformedCallback(f"{key} is not a text")
    text = str(value).strip()
    if len(text) > limit:
        raise MalformedCallback(f"{key} is longer than {limit} characters")
    return storable(text, key)
