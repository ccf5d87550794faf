"""Every customer- and merchant-facing sentence, in one place.

Money is always shown as ``KES 1,250``. Swahili arrives with the chat (``/language``);
until then every language falls back to English.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payments.result_codes import FailureReason


def kes(amount: int) -> str:
    return f"KES {amount:,}"


FAILURE_REASONS: dict[str, str] = {
    FailureReason.CANCELLED: "The M-Pesa request was cancelled on your phone.",
    FailureReason.NO_ANSWER: "Your phone did not answer the M-Pesa request in time.",
    FailureReason.WRONG_PIN: "The M-Pesa PIN was wrong.",
    FailureReason.INSUFFICIENT_FUNDS: "There was not enough money in your M-Pesa account.",
    FailureReason.MPESA_BUSY: "M-Pesa is busy right now. Please try again in a minute.",
    FailureReason.LIMIT_REACHED: "This payment is over your M-Pesa daily limit.",
    FailureReason.PIN_LOCKED: "Your M-Pesa PIN is locked. Call Safaricom on 100 to unlock it.",
    FailureReason.SHOP_SETUP: "The shop's M-Pesa setup has a problem. The shop has been told.",
    FailureReason.UNREACHABLE: "We could not reach M-Pesa. Please try again in a minute.",
    FailureReason.INVALID_NUMBER: "M-Pesa did not accept that phone number.",
    FailureReason.OTHER: "M-Pesa could not complete the payment.",
}


def failure_reason_text(reason: str) -> str:
    return FAILURE_REASONS.get(reason, FAILURE_REASONS[FailureReason.OTHER])


def outbox_text(kind: str, payload: Mapping[str, Any]) -> str:
    """The words for an outbox message (kinds from ``payments.settlement.MessageKind``)."""
    ref = payload["order_reference"]
    if kind == "payment_paid":
        receipt = payload.get("receipt") or "(the receipt number will follow by SMS)"
        return f"Paid: {kes(payload['paid_amount'])} for order {ref}. M-Pesa receipt {receipt}."
    if kind == "payment_failed":
        reason = failure_reason_text(str(payload.get("reason", "")))
        return f"Payment for order {ref} did not go through. {reason} You can try again."
    if kind == "payment_under_review":
        return (
            f"We received {kes(payload['paid_amount'])} for order {ref}. "
            "The shop is checking it and will contact you."
        )
    if kind == "order_paid":
        receipt = payload.get("receipt") or "receipt pending"
        return (
            f"New paid order {ref}: {kes(payload['paid_amount'])} from {payload['masked_phone']} "
            f"({receipt})."
        )
    if kind == "payment_needs_review":
        why = str(payload.get("why", "")).replace("_", " ")
        return (
            f"Check order {ref}: {why}. Paid {kes(payload['paid_amount'])} "
            f"against a total of {kes(payload['order_total'])} "
            f"(receipt {payload.get('receipt') or 'pending'})."
        )
    raise ValueError(f"no text for outbox message kind {kind!r}")
