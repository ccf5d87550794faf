"""Every way Kenyans write a phone number, and the ones M-Pesa cannot use."""

from __future__ import annotations

import pytest

from payments.phone import InvalidPhoneNumber, display_msisdn, mask_msisdn, normalize_msisdn


@pytest.mark.parametrize(
    "text",
    [
        "0712345678",
        "712345678",
        "+254712345678",
        "254712345678",
        "00254712345678",
        "0712 345 678",
        "0712-345-678",
        "+254 712 345 678",
        "(0712) 345.678",
        " 0712345678 ",
    ],
)
def test_all_common_forms_become_the_12_digit_msisdn(text: str) -> None:
    number = normalize_msisdn(text)
    assert number.msisdn == "254712345678"
    assert number.warning is None


@pytest.mark.parametrize(
    ("text", "msisdn"),
    [
        ("0110123456", "254110123456"),
        ("0141234567", "254141234567"),
        ("110123456", "254110123456"),
        ("0757123456", "254757123456"),
        ("0768123456", "254768123456"),
    ],
)
def test_safaricom_01_and_newer_07_ranges_are_accepted(text: str, msisdn: str) -> None:
    number = normalize_msisdn(text)
    assert number.msisdn == msisdn
    assert number.is_safaricom_prefix


@pytest.mark.parametrize(
    ("text", "network"),
    [("0733123456", "Airtel"), ("0100123456", "Airtel"), ("0770123456", "Telkom")],
)
def test_other_networks_get_a_warning_not_a_refusal(text: str, network: str) -> None:
    number = normalize_msisdn(text)
    assert number.warning is not None
    assert network in number.warning
    assert "Safaricom" in number.warning


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a phone number"),
        ("hello", "not a phone number"),
        ("0712 34", "not a Kenyan mobile number"),
        ("07123456789", "not a Kenyan mobile number"),
        ("+255712345678", "not a Kenyan mobile number"),
        ("+44 7700 900123", "not a Kenyan mobile number"),
        ("0202123456", "not a mobile number"),
        ("0712345678x", "not a phone number"),
    ],
)
def test_unusable_numbers_are_refused_with_a_clear_message(text: str, problem: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match=problem):
        normalize_msisdn(text)


def test_display_and_mask() -> None:
    assert display_msisdn("254712345678") == "0712 345 678"
    assert mask_msisdn("254712345678") == "07XX XXX 678"
    assert mask_msisdn(None) == "***"
