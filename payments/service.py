"""Starting a payment: write the attempt first, then push, then record what Daraja said.

The attempt row exists before the push is sent, so a crash mid-push leaves a trace the
reconciler expires; a unique partial index allows one open attempt per order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from payments import ledger
from payments.callback_urls import attempt_callback_url
from payments.daraja_client import (
    MAX_AMOUNT,
    DarajaClient,
    InvalidPushRequest,
    PushAccepted,
    StkPushRequest,
)
from payments.errors import DarajaError, PushOutcomeUnknown
from payments.limits import LimitHit, PromptLimits, prompt_limit_hit
from payments.metrics import Metrics
from payments.phone import MpesaNumber, mask_checkout_id, mask_msisdn, normalize_msisdn
from payments.settlement import EventStatus
from payments.states import OrderStatus, PaymentStatus
from storage.engine import Database
from storage.schema import OPEN_PAYMENT_STATUSES, orders, payments

log = logging.getLogger(__name__)
# Waits between tries to record Daraja's answer to a push (about 30 s in all).
RECORD_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


class PaymentNotStarted(Exception):
    """The order cannot be paid now; ``str(exc)`` is fit to show the customer."""


class OrderNotPayable(PaymentNotStarted):
    pass


class PaymentInProgress(PaymentNotStarted):
    pass


class TooManyPrompts(PaymentNotStarted):
    """A prompt limit would be broken (``hit`` says which, and how long to wait)."""

    def __init__(self, hit: LimitHit) -> None:
        minutes = max(1, -(-int(hit.wait.total_seconds()) // 60))
        super().__init__(f"Too many payment requests ({hit.kind}); try again in {minutes} min.")
        self.hit = hit
        self.minutes = minutes


@dataclass(frozen=True, slots=True)
class Attempt:
    """A payment attempt written (``created``) and not pushed yet."""

    payment_id: int
    reference: str  # the order's
    amount: int
    msisdn: str


@dataclass(frozen=True, slots=True)
class PaymentStarted:
    payment_id: int
    status: PaymentStatus  # PENDING, or UNKNOWN when Daraja's answer was lost
    msisdn: str
    amount: int
    order_reference: str
    warning: str | None  # e.g. the number is in another network's range


_NOT_PAYABLE = {
    OrderStatus.PAID: "Order {} is already paid.",
    OrderStatus.CANCELLED: "Order {} was cancelled.",
    OrderStatus.NEEDS_REVIEW: "The shop is checking the payment for order {}.",
    OrderStatus.REFUND_PENDING: "Order {} was cancelled by the shop.",
    OrderStatus.REFUNDED: "Order {} was cancelled by the shop.",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class PaymentService:
    def __init__(
        self,
        database: Database,
        client: DarajaClient,
        *,
        query_after_seconds: float,
        clock: Callable[[], datetime] = utc_now,
        on_applied: Callable[[], None] | None = None,
        limits: PromptLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._limits = limits or PromptLimits()
        self._metrics = metrics or Metrics()
        self._database = database
        self._client = client
        self._query_after = timedelta(seconds=query_after_seconds)
        self._clock = clock
        # Recording a push can apply a callback that was waiting for it: wake the dispatcher.
        self._on_applied = on_applied

    async def start_payment(self, order_id: int, phone: str | MpesaNumber) -> PaymentStarted:
        """Push an STK prompt for the order's total to ``phone``.

        Raises ``InvalidPhoneNumber``, ``PaymentNotStarted`` (nothing was sent), or a
        ``DarajaError`` after recording it on the attempt (its ``reason`` says what to
        tell the customer).
        """
        number = phone if isinstance(phone, MpesaNumber) else normalize_msisdn(phone)
        try:
            attempt = await self._database.transaction(
                self.open_attempt, order_id, number.msisdn, self._clock()
            )
        except IntegrityError as exc:
            # Two concurrent "pay" taps: the partial unique index let only one through.
            raise PaymentInProgress("A payment for this order is already in progress.") from exc
        return await self.push(attempt)

    def open_attempt(self, conn: Connection, order_id: int, msisdn: str, now: datetime) -> Attempt:
        """Write the attempt (``created``) in the caller's transaction, before anything is
        sent; raises ``PaymentNotStarted`` (having written nothing) when it cannot be."""
        payment_id, reference, amount = _create_attempt(conn, order_id, msisdn, now, self._limits)
        return Attempt(payment_id, reference, amount, msisdn)

    async def push(self, attempt: Attempt) -> PaymentStarted:
        """Send the prompt for an attempt opened (and committed) by ``open_attempt``."""
        payment_id, reference, amount = attempt.payment_id, attempt.reference, attempt.amount
        number = normalize_msisdn(attempt.msisdn)
        own_url = attempt_callback_url(self._client.callback_url, payment_id)
        request = StkPushRequest(number.msisdn, amount, reference, own_url)
        try:
            accepted = await self._client.stk_push(request)
        except PushOutcomeUnknown as exc:
            self._metrics.push("unknown")
            log.warning(
                "push unknown: order %s, %s, KES %d: %s (the reconciler will ask Daraja)",
                reference,
                mask_msisdn(number.msisdn),
                amount,
                exc,
            )
            await self._record_push(payment_id, PaymentStatus.UNKNOWN, error=exc)
            return PaymentStarted(
                payment_id, PaymentStatus.UNKNOWN, number.msisdn, amount, reference, number.warning
            )
        except (DarajaError, InvalidPushRequest) as exc:
            self._metrics.push("refused")
            log.warning(
                "push refused: order %s, %s, KES %d: %s",
                reference,
                mask_msisdn(number.msisdn),
                amount,
                exc,
            )
            await self._record_push(payment_id, PaymentStatus.FAILED, error=exc)
            raise
        except BaseException as exc:
            # Unknown failure (even cancellation) after the request may have left: never
            # assume it was not sent. (One try: this path may be a shutdown.)
            self._metrics.push("unknown")
            await self._database.transaction(
                self._record_push_outcome,
                payment_id,
                PaymentStatus.UNKNOWN,
                None,
                exc,
                self._clock(),
            )
            raise
        self._metrics.push("accepted")
        await self._record_push(payment_id, PaymentStatus.PENDING, accepted=accepted)
        log.info(
            "push accepted: order %s, %s, KES %d, checkout %s",
            reference,
            mask_msisdn(number.msisdn),
            amount,
            mask_checkout_id(accepted.checkout_request_id),
        )
        return PaymentStarted(
            payment_id, PaymentStatus.PENDING, number.msisdn, amount, reference, number.warning
        )

    async def _record_push(
        self,
        payment_id: int,
        status: PaymentStatus,
        *,
        accepted: PushAccepted | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Store what Daraja said about the push. Daraja's answer exists only in memory
        until this commits, so a failing write is tried again for a while; if it never
        succeeds, the CheckoutRequestID is logged with the attempt and the callback waits as
        an orphan (matched by phone and amount once the attempt expires, or shown to the
        merchant as unmatched money): never lost, never "failed"."""
        checkout_id = accepted.checkout_request_id if accepted is not None else "-"
        for delay in (*RECORD_RETRY_SECONDS, None):
            try:
                await self._database.transaction(
                    self._record_push_outcome, payment_id, status, accepted, error, self._clock()
                )
                if status is PaymentStatus.UNKNOWN:
                    # Its callback may already be here, with an id we never learned. (A
                    # transaction of its own: adoption locks ids before rows, and this
                    # attempt's row is locked above.)
                    await self._database.transaction(
                        _adopt_since_created, payment_id, self._clock()
                    )
                if self._on_applied is not None:
                    self._on_applied()
                return
            except Exception:
                if delay is None:
                    log.error(
                        "payment %d: Daraja's answer to its push (%s, CheckoutRequestID %s) "
                        "could not be recorded; its callback will be matched as an orphan",
                        payment_id,
                        status,
                        mask_checkout_id(checkout_id),
                        exc_info=True,
                    )
                    return
                log.warning(
                    "payment %d: recording Daraja's answer (%s, CheckoutRequestID %s) failed; "
                    "trying again in %g s",
                    payment_id,
                    status,
                    mask_checkout_id(checkout_id),
                    delay,
                    exc_info=True,
                )
                await asyncio.sleep(delay)

    def _record_push_outcome(
        self,
        conn: Connection,
        payment_id: int,
        status: PaymentStatus,
        accepted: PushAccepted | None,
        error: BaseException | None,
        now: datetime,
    ) -> None:
        if accepted is not None:
            # First, so that a callback for this id being stored right now is seen below.
            ledger.lock_checkout_ids(conn, [accepted.checkout_request_id])
        before = ledger.snapshot_by_id(conn, payment_id)
        if before is None or before.status is not PaymentStatus.CREATED:
            return
        after = replace(before, status=status, settled_by="push")
        extra: dict[str, object] = {}
        if accepted is not None:
            after = replace(
                after, checkout_request_id=accepted.checkout_request_id, settled_by=None
            )
            extra = {
                "push_accepted_at": now,
                "next_query_at": now + self._query_after,
                "merchant_request_id": accepted.merchant_request_id,
            }
            raw = json.dumps(accepted.raw)
        else:
            code = getattr(error, "error_code", "") or type(error).__name__
            message = getattr(error, "error_message", None) or str(error)
            after = replace(after, result_code=code, result_desc=message)
            raw = json.dumps({"error": code, "message": message})
        ledger.write_payment_changes(conn, [(before, after)], now, **extra)
        event = ledger.NewEvent(
            "push", raw, after.checkout_request_id, EventStatus.APPLIED, str(status), payment_id
        )
        ledger.insert_events(conn, [event], now)
        if accepted is not None:
            # The callback can beat the push answer; it waits as an orphan until now.
            ledger.adopt_orphans(conn, now, checkout_ids=[accepted.checkout_request_id])


def _adopt_since_created(conn: Connection, payment_id: int, now: datetime) -> None:
    ledger.adopt_orphans(conn, now, received_after=ledger.created_at(conn, payment_id))


def _create_attempt(
    conn: Connection, order_id: int, msisdn: str, now: datetime, limits: PromptLimits
) -> tuple[int, str, int]:
    """Write the attempt (``created``) before anything is sent: (id, reference, amount)."""
    order = conn.execute(
        select(orders.c.reference, orders.c.status, orders.c.total, orders.c.customer_id)
        .where(orders.c.id == order_id)
        .with_for_update()
    ).first()
    if order is None:
        raise OrderNotPayable("That order does not exist.")
    if order.status != OrderStatus.AWAITING_PAYMENT:
        raise OrderNotPayable(_NOT_PAYABLE[order.status].format(order.reference))
    if order.total > MAX_AMOUNT:
        raise OrderNotPayable(
            f"Order {order.reference} is over KES {MAX_AMOUNT:,}, the most one M-Pesa payment "
            "can carry."
        )
    open_attempt = conn.execute(
        select(payments.c.id).where(
            payments.c.order_id == order_id, payments.c.status.in_(OPEN_PAYMENT_STATUSES)
        )
    ).first()
    if open_attempt is not None:
        raise PaymentInProgress(
            f"A payment for order {order.reference} is already waiting for your PIN."
        )
    hit = prompt_limit_hit(
        conn,
        limits,
        msisdn=msisdn,
        customer_id=order.customer_id,
        amount=order.total,
        now=now,
    )
    if hit is not None:
        log.warning("prompt to %s refused: %s limit", mask_msisdn(msisdn), hit.kind)
        raise TooManyPrompts(hit)
    payment_id = conn.execute(
        insert(payments)
        .values(
            order_id=order_id,
            status=str(PaymentStatus.CREATED),
            msisdn=msisdn,
            amount=order.total,
            created_at=now,
            updated_at=now,
            own_callback_url=True,  # pushed with its own CallBackURL (see callback_urls)
        )
        .returning(payments.c.id)
    ).scalar_one()
    return int(payment_id), str(order.reference), int(order.total)
