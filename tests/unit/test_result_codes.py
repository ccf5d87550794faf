"""ResultCodes: normalizing the number/string mix, and what each means for the customer."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payments.result_codes import RETRYABLE, FailureReason, failure_reason, normalize_result_code


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (0, "0"),
        ("0", "0"),
        (0.0, "0"),
        (Decimal("0.00"), "0"),
        (1032, "1032"),
        (" 1032 ", "1032"),
        ("SFC_IC0003", "SFC_IC0003"),
    ],
)
def test_normalize(raw: object, code: str) -> None:
    assert normalize_result_code(raw) == code


@pytest.mark.parametrize("raw", [None, True, "", [0], {"code": 0}])
def test_unusable_codes_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="ResultCode"):
        normalize_result_code(raw)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("1032", FailureReason.CANCELLED),
        ("1037", FailureReason.NO_ANSWER),
        ("2001", FailureReason.WRONG_PIN),
        ("1", FailureReason.INSUFFICIENT_FUNDS),
        ("1001", FailureReason.MPESA_BUSY),
        ("SFC_IC0003", FailureReason.SHOP_SETUP),
        ("2028", FailureReason.SHOP_SETUP),
        ("8006", FailureReason.PIN_LOCKED),
        ("424242", FailureReason.OTHER),
    ],
)
def test_failure_reasons(code: str, reason: FailureReason) -> None:
    assert failure_reason(code) is reason


def test_a_customer_can_retry_after_user_errors_but_not_after_shop_setup_errors() -> None:
    assert FailureReason.CANCELLED in RETRYABLE
    assert FailureReason.SHOP_SETUP not in RETRYABLE
    assert FailureReason.PIN_LOCKED not in RETRYABLE
