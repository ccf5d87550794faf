"""What Daraja's STK ResultCodes mean for the customer (daraja.md §5).

ResultCodes arrive as numbers in callbacks and as strings in query answers, and
sometimes as non-numeric strings (``SFC_IC0003``): everything here works on ``str``.
Unknown codes are a failure of that one attempt; the customer may try again.
"""

from __future__ import annotations

import math
from decimal import Decimal
from enum import StrEnum

SUCCESS_CODE = "0"


class FailureReason(StrEnum):
    CANCELLED = "cancelled"  # 1032: the customer dismissed the prompt
    NO_ANSWER = "no_answer"  # 1037, 1019, and our own expiry: the prompt was not answered
    WRONG_PIN = "wrong_pin"  # 2001
    INSUFFICIENT_FUNDS = "insufficient_funds"  # 1
    MPESA_BUSY = "mpesa_busy"  # 1001, 17, 26, 9999, 1025, system busy: try in a minute
    LIMIT_REACHED = "limit_reached"  # 4: the customer's daily limit
    PIN_LOCKED = "pin_locked"  # 8006
    SHOP_SETUP = "shop_setup"  # 2028, SFC_IC0003, 2, 3, 8: the merchant must fix something
    UNREACHABLE = "unreachable"  # we could not reach M-Pesa at all
    INVALID_NUMBER = "invalid_number"  # M-Pesa refused the phone number
    OTHER = "other"


_REASONS: dict[str, FailureReason] = {
    "1032": FailureReason.CANCELLED,
    "1037": FailureReason.NO_ANSWER,
    "1019": FailureReason.NO_ANSWER,
    "2001": FailureReason.WRONG_PIN,
    "1": FailureReason.INSUFFICIENT_FUNDS,
    "1001": FailureReason.MPESA_BUSY,
    "17": FailureReason.MPESA_BUSY,
    "26": FailureReason.MPESA_BUSY,
    "1025": FailureReason.MPESA_BUSY,
    "9999": FailureReason.MPESA_BUSY,
    "4": FailureReason.LIMIT_REACHED,
    "8006": FailureReason.PIN_LOCKED,
    "2028": FailureReason.SHOP_SETUP,
    "SFC_IC0003": FailureReason.SHOP_SETUP,
    "2": FailureReason.SHOP_SETUP,
    "3": FailureReason.SHOP_SETUP,
    "8": FailureReason.SHOP_SETUP,
}

# Reasons after which a fresh STK push (with the customer's consent) can succeed.
RETRYABLE = frozenset(
    {
        FailureReason.CANCELLED,
        FailureReason.NO_ANSWER,
        FailureReason.WRONG_PIN,
        FailureReason.INSUFFICIENT_FUNDS,
        FailureReason.MPESA_BUSY,
        FailureReason.UNREACHABLE,
        FailureReason.INVALID_NUMBER,
        FailureReason.OTHER,
    }
)


def normalize_result_code(value: object) -> str:
    """``0``, ``"0"`` and ``0.0`` are all success; ``"SFC_IC0003"`` stays as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise ValueError(f"ResultCode must be a number or a text, not {type(value).__name__}")
    if isinstance(value, float | Decimal):
        if not math.isfinite(value):
            raise ValueError("ResultCode is not a finite number")
        if value == int(value):
            return str(int(value))
    text = str(value).strip()
    if not text:
        raise ValueError("ResultCode is empty")
    return text


def failure_reason(result_code: str) -> FailureReason:
    return _REASONS.get(result_code, FailureReason.OTHER)
