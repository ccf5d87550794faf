"""Reading Daraja's C2B bodies (``parse_c2b``) and the account numbers customers type."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from payments.c2b import parse_c2b
from payments.credentials import NAIROBI
from payments.results import MalformedCallback
from storage.references import normalize_reference

# Daraja's own v2 sample (daraja.md §8), every value a string.
SAMPLE: dict[str, str] = {
    "TransactionType": "Pay Bill",
    "TransID": "RKL51ZDR4F",
    "TransTime": "20231121121325",
    "TransAmount": "5.00",
    "BusinessShortCode": "600966",
    "BillRefNumber": "Sample Transaction",
    "InvoiceNumber": "",
    "OrgAccountBalance": "25.00",
    "ThirdPartyTransID": "",
    "MSISDN": "2547 ***** 126",
    "FirstName": "NICHOLAS",
    "MiddleName": "",
    "LastName": "",
}


def body(**changes: Any) -> bytes:
    """The sample with fields replaced (a value of None removes the field)."""
    document: dict[str, Any] = dict(SAMPLE)
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return json.dumps(document).encode()


def test_darajas_sample_confirmation_is_read_field_by_field() -> None:
    """Daraja's own sample: TransID, amount, account, masked phone, short code, Nairobi time."""
    payment = parse_c2b(json.dumps(SAMPLE).encode())
    assert payment.trans_id == "RKL51ZDR4F"
    assert payment.amount == Decimal("5.00")
    assert payment.bill_ref == "Sample Transaction"
    assert payment.masked_phone == "07XX XXX 126"  # M-Pesa's mask, in our style
    assert payment.short_code == "600966"
    assert payment.transaction_at == datetime(2023, 11, 21, 12, 13, 25, tzinfo=NAIROBI)


def test_validation_body_with_an_empty_balance_is_read_the_same() -> None:
    """Validation gets the same shape with OrgAccountBalance empty."""
    payment = parse_c2b(body(OrgAccountBalance=""))
    assert (payment.trans_id, payment.amount) == ("RKL51ZDR4F", Decimal("5.00"))


def test_arrived_money_carries_the_trans_id_and_the_account_but_no_phone() -> None:
    """C2B masks the number: only the receipt and the typed account identify the money."""
    money = parse_c2b(body(BillRefNumber="dk 7kx3m9")).money
    assert (money.source, money.receipt, money.account) == ("c2b", "RKL51ZDR4F", "dk 7kx3m9")
    assert money.msisdn is None
    assert money.masked_phone == "07XX XXX 126"
    assert money.checkout_request_id is None


def test_trans_id_is_trimmed_and_upper_cased() -> None:
    """The idempotency key has one spelling however it arrives."""
    assert parse_c2b(body(TransID=" rkl51zdr4f ")).trans_id == "RKL51ZDR4F"


@pytest.mark.parametrize(
    ("value", "amount"),
    [("5.00", Decimal(5)), ("350", Decimal(350)), (" 350.50 ", Decimal("350.5")), (350, 350)],
)
def test_amounts_as_daraja_writes_them_are_read_exactly(value: object, amount: Decimal) -> None:
    """Text with or without cents; a JSON number is tolerated too."""
    assert parse_c2b(body(TransAmount=value)).amount == amount


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e30", "not between 1 and 10,000,000"),
        ("NaN", "not a finite number"),
        ("Infinity", "not a finite number"),
        ("-5.00", "not between 1 and 10,000,000"),
        ("0.00", "not between 1 and 10,000,000"),
        ("0.50", "not between 1 and 10,000,000"),
        ("10000000.01", "not between 1 and 10,000,000"),
        ("350.001", "more than two decimals"),
        ("KES 350", "not a number"),
        ("", "TransAmount is missing or empty"),
        ("   ", "TransAmount is missing or empty"),
        (None, "TransAmount is missing or empty"),
        ({"value": "350"}, "TransAmount is not a text"),
        (True, "TransAmount is not a text"),
        ("1" * 33, "TransAmount is longer than 32 characters"),
    ],
)
def test_unusable_amounts_are_refused_with_the_reason(value: object, reason: str) -> None:
    """Not finite, out of range, fractional cents, not text: refused, saying why."""
    with pytest.raises(MalformedCallback, match=reason):
        parse_c2b(body(TransAmount=value))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "TransID is missing or empty"),
        ("", "TransID is missing or empty"),
        ("RKL-51ZDR4F", "not an M-Pesa transaction id"),
        ("RKL51 ZDR4F", "not an M-Pesa transaction id"),
        ("ABC12", "not an M-Pesa transaction id"),
        ("A" * 33, "TransID is longer than 32 characters"),
        (["RKL51ZDR4F"], "TransID is not a text"),
    ],
)
def test_a_missing_or_forged_trans_id_is_refused(value: object, reason: str) -> None:
    """TransID is the idempotency key: without a plausible one nothing can be recorded."""
    with pytest.raises(MalformedCallback, match=reason):
        parse_c2b(body(TransID=value))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "top level is not an object"),
        (b'"RKL51ZDR4F"', "top level is not an object"),
        (b'{"TransID": "RKL51ZDR4F", "TransAmount": NaN}', "NaN is not a value Daraja sends"),
        (b'{"TransID": "RKL51ZDR4F", "TransAmount": Infinity}', "Infinity is not a value"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_refused(raw: bytes, reason: str) -> None:
    """Garbage, arrays, bare NaN/Infinity and deep nesting are refused, saying why."""
    with pytest.raises(MalformedCallback, match=reason):
        parse_c2b(raw)


def test_optional_fields_may_be_missing() -> None:
    """No MSISDN, account, short code or time: still money with a receipt."""
    payment = parse_c2b(
        body(MSISDN=None, BillRefNumber=None, BusinessShortCode=None, TransTime=None)
    )
    assert (payment.masked_phone, payment.bill_ref, payment.short_code) == ("***", "", "")
    assert payment.transaction_at is None


@pytest.mark.parametrize(
    "garbled",
    [
        "2023112112",
        "20231321121325",
        "2023112112132X",
        "2023-11-21 12:13:25",
        "2023-11-21T12:13:25",
    ],
)
def test_a_garbled_trans_time_never_refuses_the_money(garbled: str) -> None:
    """The receipt and amount matter more than the time: any unreadable time is dropped."""
    payment = parse_c2b(body(TransTime=garbled))
    assert payment.transaction_at is None
    assert payment.trans_id == "RKL51ZDR4F"


@pytest.mark.parametrize(
    "typed",
    ["DK-7KX3M9", "dk 7kx3m9", " dk-7kx3m9 ", "DK7KX3M9", "dk_7kx3m9", "Dk 7Kx 3m9", "7kx3m9"],
)
def test_an_account_number_typed_loosely_names_the_stored_reference(typed: str) -> None:
    """Case, spaces, dashes and a missing DK prefix do not matter."""
    assert normalize_reference(typed) == "DK-7KX3M9"


def test_a_reference_whose_code_starts_with_dk_survives_normalising() -> None:
    """Only one leading DK is taken as the prefix."""
    assert normalize_reference("dk dk4abc") == "DK-DK4ABC"


@pytest.mark.parametrize(
    ("msisdn", "shown"),
    [
        ("2547 ***** 126", "07XX XXX 126"),  # v2: masked by M-Pesa, shown in our style
        ("254712345126", "07XX XXX 126"),  # a full number is never shown whole
        ("a" * 64, "hidden by M-Pesa"),  # v1: a SHA-256 hash, reversible and unreadable
        ("0712345126", "***"),  # anything else unmasked is not shown
    ],
)
def test_the_payers_number_is_only_ever_shown_masked(msisdn: str, shown: str) -> None:
    assert parse_c2b(body(MSISDN=msisdn)).masked_phone == shown


def test_a_huge_integer_is_a_malformed_body_not_a_crash() -> None:
    with pytest.raises(MalformedCallback, match="not valid JSON"):
        parse_c2b(b'{"TransID": "RKL51ZDR4F", "TransAmount": ' + b"9" * 5000 + b"}")
