"""Callback and query shapes, including the odd ones seen in the wild (daraja.md §3, §4)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from payments.results import MalformedCallback, ResultSource, parse_callback, parse_query_answer


def callback(
    result_code: Any = 0, items: list[dict[str, Any]] | None = None, **extra: Any
) -> bytes:
    stk: dict[str, Any] = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": result_code,
        "ResultDesc": "The service request is processed successfully.",
        **extra,
    }
    if items is not None:
        stk["CallbackMetadata"] = {"Item": items}
    return json.dumps({"Body": {"stkCallback": stk}}).encode()


OFFICIAL_V3_SUCCESS = b"""{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",
"CheckoutRequestID":"ws_CO_191220191020363925","ResultCode":0,
"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[
{"Name":"Amount","Value":1.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},
{"Name":"TransactionDate","Value":20191219102115},{"Name":"PhoneNumber","Value":254708374149}]}}}}"""


def test_official_success_sample() -> None:
    result = parse_callback(OFFICIAL_V3_SUCCESS)
    assert result.succeeded
    assert result.source is ResultSource.CALLBACK
    assert result.checkout_request_id == "ws_CO_191220191020363925"
    assert result.amount == Decimal("1.00")
    assert result.receipt == "NLJ7RT61SV"
    assert result.msisdn == "254708374149"
    assert result.transaction_at is not None
    assert result.transaction_at.strftime("%Y%m%d%H%M%S") == "20191219102115"


def test_items_are_read_by_name_whatever_their_order_and_a_valueless_balance() -> None:
    items: list[dict[str, Any]] = [
        {"Name": "PhoneNumber", "Value": 254712345678},
        {"Name": "Balance"},
        {"Name": "TransactionDate", "Value": 20261126102115},
        {"Name": "MpesaReceiptNumber", "Value": "TST0000001"},
        {"Name": "Amount", "Value": 350},
    ]
    result = parse_callback(callback(items=items))
    assert result.amount == Decimal(350)
    assert (result.receipt, result.msisdn) == ("TST0000001", "254712345678")


def test_balance_as_a_strange_string_is_ignored() -> None:
    items: list[dict[str, Any]] = [
        {"Name": "Amount", "Value": 5},
        {"Name": "MpesaReceiptNumber", "Value": "TST0000002"},
        {"Name": "Balance", "Value": "{Amount={CurrencyCode=KES, BasicAmount=25.00}}"},
    ]
    assert parse_callback(callback(items=items)).receipt == "TST0000002"


def test_success_given_as_string_zero() -> None:
    items = [{"Name": "Amount", "Value": "10.00"}, {"Name": "MpesaReceiptNumber", "Value": "X1"}]
    result = parse_callback(callback("0", items))
    assert result.succeeded
    assert result.amount == Decimal("10.00")


def test_failure_has_no_metadata_and_a_numeric_code() -> None:
    result = parse_callback(callback(1032, ResultDesc="Request cancelled by user"))
    assert not result.succeeded
    assert (result.result_code, result.result_desc) == ("1032", "Request cancelled by user")
    assert result.amount is None


def test_non_numeric_result_code_string() -> None:
    assert parse_callback(callback("SFC_IC0003")).result_code == "SFC_IC0003"


def test_garbled_transaction_date_does_not_refuse_the_money() -> None:
    items: list[dict[str, Any]] = [
        {"Name": "Amount", "Value": 1},
        {"Name": "MpesaReceiptNumber", "Value": "TST0000003"},
        {"Name": "TransactionDate", "Value": "yesterday"},
    ]
    result = parse_callback(callback(items=items))
    assert result.transaction_at is None
    assert result.receipt == "TST0000003"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"null", "top level"),
        (b'{"Body": []}', "Body is missing"),
        (callback(0).replace(b'"ws_CO_191220191020363925"', b'""'), "CheckoutRequestID"),
        (callback(None), "ResultCode is invalid"),
        (callback(True), "ResultCode is invalid"),
        (callback(0), "CallbackMetadata"),
        (callback(0, items="nope"), "Item is missing or not a list"),  # type: ignore[arg-type]
        (callback(0, [{"Name": "Amount", "Value": 1}]), "no MpesaReceiptNumber"),
        (callback(0, [{"Name": "MpesaReceiptNumber", "Value": "X"}]), "no Amount"),
        (
            callback(
                0,
                [{"Name": "Amount", "Value": "ten"}, {"Name": "MpesaReceiptNumber", "Value": "X"}],
            ),
            "not a number",
        ),
        (
            callback(
                0, [{"Name": "Amount", "Value": -5}, {"Name": "MpesaReceiptNumber", "Value": "X"}]
            ),
            "not between 1 and 10,000,000",
        ),
    ],
)
def test_malformed_callbacks_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedCallback, match=reason):
        parse_callback(body)


def test_query_answer_codes_are_strings() -> None:
    answer = {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": "22205-34066-1",
        "CheckoutRequestID": "ws_CO_13012021093521236557",
        "ResultCode": "1032",
        "ResultDesc": "Request cancelled by user",
    }
    result = parse_query_answer(answer)
    assert result.source is ResultSource.QUERY
    assert result.result_code == "1032"
    assert result.receipt is None


def test_query_answer_without_result_code_is_malformed() -> None:
    with pytest.raises(MalformedCallback):
        parse_query_answer({"CheckoutRequestID": "ws_CO_1"})


def _paid_with_amount(raw_amount: str) -> bytes:
    """A success callback whose Amount is written into the JSON exactly as given."""
    body = callback(
        0, [{"Name": "Amount", "Value": 0}, {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"}]
    )
    return body.replace(b'"Value": 0}', f'"Value": {raw_amount}}}'.encode(), 1)


@pytest.mark.parametrize(
    ("raw_amount", "reason"),
    [
        ("1e30", "between 1 and 10,000,000"),
        ("1e1000000", "between 1 and 10,000,000"),
        ("10000000.01", "between 1 and 10,000,000"),
        ("0.5", "between 1 and 10,000,000"),
        ("0", "between 1 and 10,000,000"),
        ("270.001", "more than two decimals"),
        ("NaN", "is not a number Daraja sends"),
        ("Infinity", "is not a number Daraja sends"),
        ('"Infinity"', "not a finite number"),
        ('"1e30"', "between 1 and 10,000,000"),
    ],
)
def test_absurd_amounts_are_refused_before_any_arithmetic(raw_amount: str, reason: str) -> None:
    with pytest.raises(MalformedCallback, match=reason):
        parse_callback(_paid_with_amount(raw_amount))


@pytest.mark.parametrize("raw_amount", ["1", "1.00", "270.5", "10000000", '"250000.00"'])
def test_plausible_amounts_are_read_exactly(raw_amount: str) -> None:
    result = parse_callback(_paid_with_amount(raw_amount))
    assert result.amount == Decimal(raw_amount.strip('"'))


def test_a_huge_integer_in_a_callback_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedCallback, match="not valid JSON"):
        parse_callback(_paid_with_amount("9" * 5000))
