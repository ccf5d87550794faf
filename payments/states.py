"""Payment and order statuses, and the only tables of transitions between them.

A payment is one STK attempt:

    created --push accepted--> pending --callback/query--> paid | failed
       |--callback before the push answer (at its own URL)--> paid | failed
       |                          '--no answer in time--> expired
       |--push refused---------> failed
       '--push outcome unknown-> unknown --(late callback)--> paid | failed; or expired

``paid`` is final. A late callback that carries a receipt may still turn ``failed`` or
``expired`` into ``paid``: the customer's money moved, so the record must say so.

Money that arrives without an STK attempt of its own (a Paybill payment for an order
with no open attempt, or unmatched money the merchant attaches) is recorded as a new
payment created ``paid`` (``ledger.record_arrived_payment``): a creation, not a
transition, so it has no row in the table.

An order:

    awaiting_payment --paid--> paid --/cancel REF why--> refund_pending --/refunded--> refunded
       |--wrong money--> needs_review --/resolve paid--> paid
       |                      '--/resolve refund|cancel--> cancelled
       '--cancelled--> cancelled --late money--> needs_review

``refunded`` is final. Money that arrives for an order in ``paid``, ``refund_pending`` or
``refunded`` is extra money: the order keeps its status and the merchant reviews it.
"""

from __future__ import annotations

from enum import StrEnum

from storage.schema import OPEN_PAYMENT_STATUSES


class PaymentStatus(StrEnum):
    CREATED = "created"  # row written, push not answered yet
    PENDING = "pending"  # Daraja accepted the push; waiting for the customer's PIN
    UNKNOWN = "unknown"  # the push may or may not have reached Daraja (timeout, 5xx)
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in _OPEN


class OrderStatus(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    NEEDS_REVIEW = "needs_review"  # money arrived but does not match: the merchant decides
    CANCELLED = "cancelled"
    # Paid, then called off by the shop: the money is to go back by hand (a reversal is not
    # something the STK API can do), and the shop says when it has.
    REFUND_PENDING = "refund_pending"
    REFUNDED = "refunded"

    @property
    def money_received(self) -> bool:
        """The order's money arrived (it may be going back): more money for it is extra."""
        return self in _MONEY_RECEIVED


# The database's partial unique index is built from the same list.
_OPEN = frozenset(PaymentStatus(status) for status in OPEN_PAYMENT_STATUSES)
_MONEY_RECEIVED = frozenset({OrderStatus.PAID, OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED})

PAYMENT_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    # PAID and FAILED straight from CREATED: the callback, at the attempt's own URL, can
    # arrive before Daraja's answer to the push is recorded.
    PaymentStatus.CREATED: frozenset(
        {
            PaymentStatus.PENDING,
            PaymentStatus.PAID,
            PaymentStatus.FAILED,
            PaymentStatus.UNKNOWN,
            PaymentStatus.EXPIRED,
        }
    ),
    PaymentStatus.PENDING: frozenset(
        {PaymentStatus.PAID, PaymentStatus.FAILED, PaymentStatus.EXPIRED}
    ),
    PaymentStatus.UNKNOWN: frozenset(
        {PaymentStatus.PAID, PaymentStatus.FAILED, PaymentStatus.EXPIRED}
    ),
    PaymentStatus.FAILED: frozenset({PaymentStatus.PAID}),
    PaymentStatus.EXPIRED: frozenset({PaymentStatus.PAID}),
    PaymentStatus.PAID: frozenset(),
}

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.AWAITING_PAYMENT: frozenset(
        {OrderStatus.PAID, OrderStatus.NEEDS_REVIEW, OrderStatus.CANCELLED}
    ),
    OrderStatus.NEEDS_REVIEW: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    # Money for a cancelled order can still arrive (a late PIN entry): it needs review.
    OrderStatus.CANCELLED: frozenset({OrderStatus.NEEDS_REVIEW}),
    # Only the shop takes a paid order back (``payments.refunds``): a refund, never "unpaid".
    OrderStatus.PAID: frozenset({OrderStatus.REFUND_PENDING}),
    OrderStatus.REFUND_PENDING: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.REFUNDED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A status change that the transition tables do not allow: a bug, never customer input."""


def check_payment_transition(current: PaymentStatus, target: PaymentStatus) -> None:
    if target not in PAYMENT_TRANSITIONS[current]:
        raise IllegalTransition(f"payment cannot go from {current} to {target}")


def check_order_transition(current: OrderStatus, target: OrderStatus) -> None:
    if target not in ORDER_TRANSITIONS[current]:
        raise IllegalTransition(f"order cannot go from {current} to {target}")
