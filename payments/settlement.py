"""Deciding what an STK result does to a payment and its order: pure, no I/O.

``settle`` is the one place where a Daraja result turns into status changes and
customer/merchant messages. The repository writes what it decides, inside the same
transaction as the raw event, so a result is applied exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from payments.phone import mask_msisdn
from payments.result_codes import SUCCESS_CODE, FailureReason, failure_reason
from payments.results import ResultSource, StkResult
from payments.states import OrderStatus, PaymentStatus


class EventStatus(StrEnum):
    RECEIVED = "received"  # stored, not yet applied (the apply step failed or has not run)
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # already applied; changes nothing
    IGNORED = "ignored"  # e.g. a query answer for a payment a callback already settled
    # A success callback that pays nothing until an STK query confirms it (DUKA_CONFIRM_PAID)
    HELD = "held"
    ORPHAN = "orphan"  # no attempt with this CheckoutRequestID (yet): kept, applied later
    UNMATCHED = "unmatched"  # paid, but tied to no single attempt: recorded as unmatched money
    FORGED = "forged"  # not at its attempt's own callback URL: refused (404), kept for audit
    REJECTED = "rejected"  # malformed; kept for audit only
    ERROR = "error"  # applying raised; kept, retried by the reconciler


class MessageKind(StrEnum):
    PAYMENT_PAID = "payment_paid"  # customer
    PAYMENT_FAILED = "payment_failed"  # customer
    PAYMENT_UNDER_REVIEW = "payment_under_review"  # customer: money arrived, merchant checks it
    # customer: M-Pesa never said whether the attempt went through; the shop will check
    PAYMENT_UNCONFIRMED = "payment_unconfirmed"
    ORDER_RESOLVED = "order_resolved"  # customer: the merchant settled a review (refund...)
    ORDER_PAID = "order_paid"  # merchant
    PAYMENT_NEEDS_REVIEW = "payment_needs_review"  # merchant: amount mismatch, double payment
    PAYMENT_CHECK = "payment_check"  # merchant: an attempt whose outcome was never confirmed
    UNMATCHED_PAYMENT = "unmatched_payment"  # merchant: money that matches no order
    # customer: a callback said "paid" and M-Pesa is being asked to confirm it (sent only
    # if that takes longer than CHECKING_NOTICE_AFTER; withdrawn if it is over sooner)
    PAYMENT_CHECKING = "payment_checking"
    # merchant: a callback claimed payment that Daraja's own answer does not confirm
    PAYMENT_NOT_CONFIRMED = "payment_not_confirmed"
    # customer: the merchant moved a paid order on (ready, on its way, delivered...)
    ORDER_PROGRESS = "order_progress"
    # customer: the shop called off a paid order and will send the money back (/cancel)
    ORDER_CANCELLED_BY_SHOP = "order_cancelled_by_shop"
    ORDER_REFUNDED = "order_refunded"  # customer: the shop says it sent the money back
    # merchant: a product fell to its low-stock count (not about a payment: the outbox
    # carries every message the shop sends)
    LOW_STOCK = "low_stock"
    # merchant: the day's report at closing time ([shop] daily_summary_at)
    DAILY_SUMMARY = "daily_summary"

    @property
    def audience(self) -> Audience:
        return Audience.MERCHANT if self in _MERCHANT_KINDS else Audience.CUSTOMER


# What a customer waits for with the phone in hand: sent before anything else in a rush.
PAYMENT_RESULTS = frozenset(
    {
        MessageKind.PAYMENT_PAID,
        MessageKind.PAYMENT_FAILED,
        MessageKind.PAYMENT_UNDER_REVIEW,
        MessageKind.PAYMENT_UNCONFIRMED,
        MessageKind.PAYMENT_CHECKING,
    }
)


class Audience(StrEnum):
    CUSTOMER = "customer"
    MERCHANT = "merchant"


_MERCHANT_KINDS = frozenset(
    {
        MessageKind.ORDER_PAID,
        MessageKind.PAYMENT_NEEDS_REVIEW,
        MessageKind.PAYMENT_CHECK,
        MessageKind.UNMATCHED_PAYMENT,
        MessageKind.PAYMENT_NOT_CONFIRMED,
        MessageKind.LOW_STOCK,
        MessageKind.DAILY_SUMMARY,
    }
)
# A held callback is usually confirmed within seconds; only a slower check is worth a word.
CHECKING_NOTICE_AFTER = timedelta(seconds=5)
# An attempt that ended without M-Pesa's word on it: the money may have moved.
UNCONFIRMED_CODE = "unconfirmed"


@dataclass(frozen=True, slots=True)
class PaymentSnapshot:
    """A payment row joined with its order, as read inside the settling transaction."""

    payment_id: int
    order_id: int
    customer_id: int
    order_reference: str
    order_status: OrderStatus
    order_total: int
    status: PaymentStatus
    amount: int
    msisdn: str
    checkout_request_id: str | None
    result_code: str | None = None
    result_desc: str | None = None
    mpesa_receipt: str | None = None
    paid_amount: int | None = None
    paid_msisdn: str | None = None
    transaction_at: datetime | None = None
    settled_by: str | None = None
    own_callback_url: bool = False  # pushed with its own URL: callbacks count only there


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    kind: MessageKind
    payment_id: int | None
    order_id: int | None
    customer_id: int | None
    payload: dict[str, Any]
    # What the message is about, for its dedupe key; by default the payment.
    subject: str | None = None
    delay: timedelta = timedelta(0)  # sent no sooner than this after it is queued

    @property
    def audience(self) -> Audience:
        return self.kind.audience

    @property
    def dedupe_key(self) -> str:
        subject = self.subject or f"payment:{self.payment_id}"
        return f"{subject}:{self.kind}:{self.audience}"


@dataclass(frozen=True, slots=True)
class ArrivedMoney:
    """Money M-Pesa reports as paid: from an STK callback, or a C2B (Paybill) confirmation."""

    source: str  # stk_callback | c2b
    receipt: str  # MpesaReceiptNumber, or the C2B TransID (the same receipt the SMS shows)
    amount: Decimal
    msisdn: str | None  # the full number when Daraja gives it (STK); C2B masks it
    masked_phone: str
    transaction_at: datetime | None
    checkout_request_id: str | None = None
    account: str = ""  # what the customer typed as the account number (C2B)

    @classmethod
    def from_stk(cls, result: StkResult) -> ArrivedMoney:
        if result.receipt is None or result.amount is None:
            raise ValueError("only a successful callback carries money")
        return cls(
            source="stk_callback",
            receipt=result.receipt,
            amount=result.amount,
            msisdn=result.msisdn,
            masked_phone=mask_msisdn(result.msisdn),
            transaction_at=result.transaction_at,
            checkout_request_id=result.checkout_request_id,
        )

    def as_result(self, source: ResultSource, checkout_request_id: str) -> StkResult:
        """The same facts as a successful result, so that ``settle`` decides as for a callback."""
        return StkResult(
            checkout_request_id=checkout_request_id,
            merchant_request_id="",
            result_code=SUCCESS_CODE,
            result_desc=f"paid ({source})",
            source=source,
            amount=self.amount,
            receipt=self.receipt,
            transaction_at=self.transaction_at,
            msisdn=self.msisdn,
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    event_status: EventStatus
    note: str
    after: PaymentSnapshot  # the payment as it should be stored (same object when unchanged)
    messages: tuple[OutboxMessage, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.event_status is EventStatus.APPLIED


def settle(payment: PaymentSnapshot, result: StkResult) -> Settlement:
    """What ``result`` does to ``payment``; duplicates and stale answers change nothing."""
    if payment.status is PaymentStatus.PAID:
        return _already_paid(payment, result)
    unconfirmed = (
        payment.status is PaymentStatus.EXPIRED and payment.result_code == UNCONFIRMED_CODE
    )
    if result.source is ResultSource.QUERY and not payment.status.is_open:
        if unconfirmed and result.succeeded:
            # Nobody knew; now Daraja says the money moved. (Only a success revives it: a
            # query never overrides what a callback or an answer settled, and the sandbox
            # query is known to report failure for payments a callback confirmed.)
            return _paid(payment, result)
        return Settlement(EventStatus.IGNORED, f"query answer after {payment.status}", payment)
    if result.succeeded:
        if result.needs_confirmation:
            return _held(payment)
        return _paid(payment, result)
    if payment.status.is_open:
        return _failed(payment, result)
    return Settlement(EventStatus.DUPLICATE, f"failure after {payment.status}", payment)


def _held(payment: PaymentSnapshot) -> Settlement:
    """A success callback from a sender we cannot vouch for: nothing changes until an STK
    query confirms it (see ``confirm_held`` and ``refute_held``). The customer is told that
    the payment is being checked only if that takes a while."""
    checking = replace(_message(payment, MessageKind.PAYMENT_CHECKING), delay=CHECKING_NOTICE_AFTER)
    return Settlement(EventStatus.HELD, "held until an STK query confirms it", payment, (checking,))


def checking_notice_key(payment_id: int) -> str:
    """The dedupe key of a payment's "checking your payment" message (to withdraw it)."""
    return OutboxMessage(MessageKind.PAYMENT_CHECKING, payment_id, None, None, {}).dedupe_key


def not_confirmed_alert(payment: PaymentSnapshot, answer: str) -> OutboxMessage:
    """The merchant's alert: a callback claimed this attempt was paid, and Daraja's own
    answer (``answer``, e.g. "1032 Request cancelled by user") says it was not."""
    return _message(payment, MessageKind.PAYMENT_NOT_CONFIRMED, extra={"answer": answer})


def expire(payment: PaymentSnapshot, *, confirmed: bool) -> Settlement:
    """The attempt is over. ``confirmed``: Daraja said it was still "being processed" when
    the prompt's life ran out, so it was never answered: the customer may simply try again.
    Otherwise M-Pesa never told us anything (the push answer was lost, or every query
    failed): the money may have moved, so nobody is told "failed"; the customer hears that
    the shop will check, and the merchant gets the attempt to check."""
    # By Paybill, or a match (and perhaps called off by the shop since).
    paid_meanwhile = payment.order_status.money_received
    if confirmed:
        after = replace(
            payment,
            status=PaymentStatus.EXPIRED,
            result_desc="No answer from M-Pesa in time",
            settled_by="expiry",
        )
        if paid_meanwhile:
            return Settlement(EventStatus.APPLIED, "expired after the order was paid", after)
        message = _message(after, MessageKind.PAYMENT_FAILED, FailureReason.NO_ANSWER)
        return Settlement(EventStatus.APPLIED, "expired", after, (message,))
    after = replace(
        payment,
        status=PaymentStatus.EXPIRED,
        result_code=UNCONFIRMED_CODE,
        result_desc="M-Pesa never confirmed whether this attempt went through",
        settled_by="expiry",
    )
    check = _message(after, MessageKind.PAYMENT_CHECK)
    if paid_meanwhile:
        # The order is paid, so the customer has nothing to do; the merchant still checks
        # whether this attempt took money too.
        return Settlement(EventStatus.APPLIED, "expired unconfirmed after payment", after, (check,))
    unconfirmed = _message(after, MessageKind.PAYMENT_UNCONFIRMED)
    return Settlement(EventStatus.APPLIED, "expired unconfirmed", after, (unconfirmed, check))


def recorded_elsewhere(payment: PaymentSnapshot, result: StkResult, holder: int) -> Settlement:
    """The result's receipt is already on payment ``holder`` (the Paybill confirmation of this
    very STK payment came first, or the merchant matched its money): the same money, so
    nothing new. An attempt still open is closed without a word, so that no later query
    answer counts that money a second time."""
    note = f"receipt already recorded on payment {holder}"
    if not payment.status.is_open:
        return Settlement(EventStatus.DUPLICATE, note, payment)
    after = replace(
        payment,
        status=PaymentStatus.EXPIRED,
        result_code=result.result_code,
        result_desc=f"its money is recorded on payment {holder}",
        settled_by=str(result.source),
    )
    return Settlement(EventStatus.APPLIED, note, after)


def is_second_payment(payment: PaymentSnapshot, result: StkResult) -> bool:
    """A paid result with another receipt for an attempt already paid: more money (the
    customer paid the Paybill and then entered the PIN too). It has no attempt of its own."""
    return (
        payment.status is PaymentStatus.PAID
        and result.succeeded
        and not result.needs_confirmation
        and payment.mpesa_receipt is not None
        and result.receipt is not None
        and result.receipt != payment.mpesa_receipt
    )


def confirm_by_merchant(payment: PaymentSnapshot) -> Settlement:
    """The merchant saw this never-confirmed attempt's money in their M-Pesa statement.
    A callback that arrives later still adds the receipt (see ``_already_paid``)."""
    after = replace(
        payment,
        status=PaymentStatus.PAID,
        order_status=OrderStatus.PAID,
        paid_amount=payment.amount,
        result_desc="confirmed by the merchant",
        settled_by="merchant",
    )
    message = _message(after, MessageKind.PAYMENT_PAID)
    return Settlement(EventStatus.APPLIED, "confirmed by the merchant", after, (message,))


def paid_notice(payment: PaymentSnapshot) -> OutboxMessage:
    """The customer's "Paid!" for a payment (e.g. once the merchant accepts money in review)."""
    return _message(payment, MessageKind.PAYMENT_PAID)


def _already_paid(payment: PaymentSnapshot, result: StkResult) -> Settlement:
    if result.needs_confirmation and result.succeeded:
        # A query cannot tell this claim from the payment already confirmed: it is kept
        # (raw, with its sender) but adds no receipt and no second payment.
        return Settlement(EventStatus.DUPLICATE, "unconfirmed claim for a paid payment", payment)
    if (
        result.source is ResultSource.CALLBACK
        and result.succeeded
        and payment.mpesa_receipt is None
        and result.receipt is not None
    ):
        # Paid on the query's word, which has no receipt; the late callback brings it,
        # and the amount actually paid, which the query answer could not tell.
        after = replace(
            payment,
            mpesa_receipt=result.receipt,
            paid_amount=int(result.amount) if result.amount is not None else payment.paid_amount,
            paid_msisdn=result.msisdn,
            transaction_at=result.transaction_at,
        )
        why = _review_reason(replace(payment, order_status=OrderStatus.AWAITING_PAYMENT), result)
        if why is None:
            return Settlement(EventStatus.APPLIED, "receipt added to a paid payment", after)
        extra = {"why": why, "paid_amount_exact": str(result.amount)}
        flag = _message(after, MessageKind.PAYMENT_NEEDS_REVIEW, extra=extra)
        return Settlement(
            EventStatus.APPLIED, f"receipt added, needs review: {why}", after, (flag,)
        )
    return Settlement(EventStatus.DUPLICATE, "payment already paid", payment)


def _paid(payment: PaymentSnapshot, result: StkResult) -> Settlement:
    paid_amount = result.amount if result.amount is not None else Decimal(payment.amount)
    review_reason = _review_reason(payment, result)
    if review_reason is None:
        order_status = OrderStatus.PAID
    elif payment.order_status.money_received:
        order_status = payment.order_status  # paid by another attempt: this one is extra money
    else:
        order_status = OrderStatus.NEEDS_REVIEW
    after = replace(
        payment,
        status=PaymentStatus.PAID,
        order_status=order_status,
        result_code=result.result_code,
        result_desc=result.result_desc,
        mpesa_receipt=result.receipt,
        paid_amount=int(paid_amount),
        paid_msisdn=result.msisdn,
        transaction_at=result.transaction_at,
        settled_by=str(result.source),
    )
    if review_reason is None:
        messages = (
            _message(after, MessageKind.PAYMENT_PAID),
            _message(after, MessageKind.ORDER_PAID),
        )
        return Settlement(EventStatus.APPLIED, "paid", after, messages)

    extra = {"why": review_reason, "paid_amount_exact": str(paid_amount)}
    messages = (
        _message(after, MessageKind.PAYMENT_UNDER_REVIEW, extra=extra),
        _message(after, MessageKind.PAYMENT_NEEDS_REVIEW, extra=extra),
    )
    return Settlement(EventStatus.APPLIED, f"paid, needs review: {review_reason}", after, messages)


def _review_reason(payment: PaymentSnapshot, result: StkResult) -> str | None:
    """Why money that arrived does not simply pay the order, or None when it does."""
    paid_amount = result.amount if result.amount is not None else Decimal(payment.amount)
    if paid_amount != Decimal(payment.order_total) or payment.amount != payment.order_total:
        return "amount_mismatch"
    if result.msisdn is not None and result.msisdn != payment.msisdn:
        # Daraja reports the phone that was pushed to; another one means a forged callback
        # or a mix-up: either way a person should look before goods leave the shop.
        return "phone_mismatch"
    if payment.order_status is OrderStatus.PAID:
        return "order_already_paid"
    if payment.order_status.money_received:
        return "order_refunded"
    if payment.order_status is OrderStatus.CANCELLED:
        return "order_cancelled"
    if payment.order_status is OrderStatus.NEEDS_REVIEW:
        return "order_under_review"
    return None


def _failed(payment: PaymentSnapshot, result: StkResult) -> Settlement:
    after = replace(
        payment,
        status=PaymentStatus.FAILED,
        result_code=result.result_code,
        result_desc=result.result_desc,
        settled_by=str(result.source),
    )
    if payment.order_status.money_received:
        # Paid meanwhile by other means (Paybill, a match): "failed" would only alarm.
        return Settlement(EventStatus.APPLIED, "failed after the order was paid", after)
    reason = failure_reason(result.result_code)
    message = _message(after, MessageKind.PAYMENT_FAILED, reason)
    return Settlement(EventStatus.APPLIED, f"failed: {result.result_code}", after, (message,))


def _message(
    payment: PaymentSnapshot,
    kind: MessageKind,
    reason: FailureReason | None = None,
    extra: dict[str, Any] | None = None,
) -> OutboxMessage:
    payload: dict[str, Any] = {
        "payment_id": payment.payment_id,
        "order_reference": payment.order_reference,
        "order_total": payment.order_total,
        "amount": payment.amount,
        "paid_amount": payment.paid_amount,
        "receipt": payment.mpesa_receipt,
        "result_code": payment.result_code,
        "result_desc": payment.result_desc,
        "masked_phone": mask_msisdn(payment.msisdn),
        # How it was settled: money paid by hand (c2b, match) had no PIN prompt to edit.
        "settled_by": payment.settled_by,
    }
    if reason is not None:
        payload["reason"] = str(reason)
    payload.update(extra or {})
    return OutboxMessage(
        kind=kind,
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        payload=payload,
    )
