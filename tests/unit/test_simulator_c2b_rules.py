"""The simulator's pure C2B parts: request checks, the validation verdict, payload shapes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from payments.simulator.c2b import (
    C2BPayment,
    DecidedBy,
    Verdict,
    confirmation_payload,
    judge_validation_answer,
    mask_msisdn,
    registered_body,
    simulate_accepted_body,
    validation_payload,
)
from payments.simulator.c2b_validation import (
    C2BPayRequest,
    C2BRegistration,
    parse_c2b_body,
    validate_pay_request,
    validate_registration,
)
from payments.simulator.config import SimulatorConfig
from payments.simulator.errors import INVALID_PAYLOAD, DarajaError, RequestRejectedError
from payments.simulator.state import IdFactory

PAYBILL = SimulatorConfig()
TILL = SimulatorConfig(till_number="600200")
# Marks a field to leave out of the body.
_MISSING = object()


def registration_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ShortCode": "174379",
        "ResponseType": "Completed",
        "ConfirmationURL": "https://shop.example.co.ke/hooks/c2b/confirm/s3cr3t",
        "ValidationURL": "https://shop.example.co.ke/hooks/c2b/validate/s3cr3t",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _MISSING}


def pay_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ShortCode": "174379",
        "CommandID": "CustomerPayBillOnline",
        "Amount": 270,
        "Msisdn": "254712345126",
        "BillRefNumber": "DK-7F3K2Q",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _MISSING}


def refusal(call: Any, *args: Any) -> DarajaError:
    with pytest.raises(RequestRejectedError) as caught:
        call(*args)
    return caught.value.error


def message(call: Any, *args: Any) -> str:
    error = refusal(call, *args)
    assert (error.http_status, error.error_code) == (400, "400.002.02")
    return error.error_message


# --- registerurl --------------------------------------------------------------------------------


def test_a_good_registration_passes_with_a_numeric_short_code() -> None:
    registration = validate_registration(registration_body(ShortCode=174379), PAYBILL)
    assert registration == C2BRegistration(
        short_code="174379",
        response_type="Completed",
        confirmation_url="https://shop.example.co.ke/hooks/c2b/confirm/s3cr3t",
        validation_url="https://shop.example.co.ke/hooks/c2b/validate/s3cr3t",
    )
    cancelled = validate_registration(registration_body(ResponseType="Cancelled"), PAYBILL)
    assert cancelled.response_type == "Cancelled"


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"ShortCode": "600000"}, "ShortCode"),
        ({"ShortCode": _MISSING}, "ShortCode"),
        ({"ShortCode": True}, "ShortCode"),
        ({"ResponseType": "COMPLETED"}, "ResponseType"),
        ({"ResponseType": "Canceled"}, "ResponseType"),
        ({"ResponseType": _MISSING}, "ResponseType"),
        ({"ConfirmationURL": _MISSING}, "ConfirmationURL"),
        ({"ConfirmationURL": "https://safaricom.example/confirm"}, "ConfirmationURL"),
        ({"ConfirmationURL": "https://shop.example.co.ke/m-pesa"}, "ConfirmationURL"),
        ({"ConfirmationURL": "https://shop.example.co.ke/a b"}, "ConfirmationURL"),
        ({"ValidationURL": "https://shop.example.co.ke/SQL"}, "ValidationURL"),
        ({"ValidationURL": "https://shop.example.co.ke/cmd"}, "ValidationURL"),
        ({"ValidationURL": "/hooks/validate"}, "ValidationURL"),
    ],
)
def test_each_bad_registration_field_is_named(changes: dict[str, Any], field_name: str) -> None:
    body = registration_body(**changes)
    assert message(validate_registration, body, PAYBILL) == f"Bad Request - Invalid {field_name}"


def test_the_first_bad_registration_field_wins() -> None:
    body = registration_body(ResponseType="x", ValidationURL="x")
    assert message(validate_registration, body, PAYBILL) == "Bad Request - Invalid ResponseType"


def test_a_body_not_declared_json_is_an_invalid_payload() -> None:
    assert refusal(parse_c2b_body, "application/x-www-form-urlencoded", "{}") == INVALID_PAYLOAD
    assert refusal(parse_c2b_body, "application/json", "[1]") == INVALID_PAYLOAD
    assert parse_c2b_body("Application/JSON", '{"a": 1}') == {"a": 1}


# --- simulate -----------------------------------------------------------------------------------


def test_a_good_payment_passes_and_is_normalised() -> None:
    body = pay_body(ShortCode=174379, Amount="270", Msisdn=254112345678, BillRefNumber=4521)
    assert validate_pay_request(body, PAYBILL) == C2BPayRequest(
        short_code="174379",
        command_id="CustomerPayBillOnline",
        amount=270,
        msisdn="254112345678",
        bill_ref_number="4521",
    )
    longest = validate_pay_request(pay_body(BillRefNumber="A" * 20), PAYBILL)
    assert longest.bill_ref_number == "A" * 20


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"ShortCode": "174380"}, "ShortCode"),
        ({"CommandID": "CustomerBuyGoodsOnline"}, "CommandID"),
        ({"CommandID": _MISSING}, "CommandID"),
        ({"Amount": 10.0}, "Amount"),
        ({"Amount": "1e3"}, "Amount"),
        ({"Amount": -5}, "Amount"),
        ({"Amount": 250_001}, "Amount"),
        ({"Msisdn": "+254712345126"}, "Msisdn"),
        ({"Msisdn": "254812345126"}, "Msisdn"),
        ({"BillRefNumber": _MISSING}, "BillRefNumber"),
        ({"BillRefNumber": "A" * 21}, "BillRefNumber"),
        ({"BillRefNumber": ["DK-1"]}, "BillRefNumber"),
    ],
)
def test_each_bad_payment_field_is_named(changes: dict[str, Any], field_name: str) -> None:
    body = pay_body(**changes)
    assert message(validate_pay_request, body, PAYBILL) == f"Bad Request - Invalid {field_name}"


def test_a_till_takes_buy_goods_with_no_account_only() -> None:
    buy_goods = {"CommandID": "CustomerBuyGoodsOnline"}
    for account in ("", None, _MISSING):
        request = validate_pay_request(pay_body(**buy_goods, BillRefNumber=account), TILL)
        assert (request.command_id, request.bill_ref_number) == ("CustomerBuyGoodsOnline", "")
    with_account = pay_body(**buy_goods)
    assert (
        message(validate_pay_request, with_account, TILL) == "Bad Request - Invalid BillRefNumber"
    )
    paybill = pay_body(BillRefNumber="")
    assert message(validate_pay_request, paybill, TILL) == "Bad Request - Invalid CommandID"


# --- the validation verdict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "response_type", "expected"),
    [
        (200, {"ResultCode": "0"}, "Cancelled", Verdict(True, DecidedBy.VALIDATION, "0")),
        (200, {"ResultCode": 0}, "Cancelled", Verdict(True, DecidedBy.VALIDATION, "0")),
        (
            200,
            {"ResultCode": "C2B00012", "ResultDesc": "Rejected"},
            "Completed",
            Verdict(False, DecidedBy.VALIDATION, "C2B00012"),
        ),
        (200, {"ResultCode": 1}, "Completed", Verdict(False, DecidedBy.VALIDATION, "1")),
        (None, None, "Completed", Verdict(True, DecidedBy.RESPONSE_TYPE)),
        (None, None, "Cancelled", Verdict(False, DecidedBy.RESPONSE_TYPE)),
        (500, {"ResultCode": "0"}, "Cancelled", Verdict(False, DecidedBy.RESPONSE_TYPE)),
        (404, None, "Completed", Verdict(True, DecidedBy.RESPONSE_TYPE)),
        (200, None, "Cancelled", Verdict(False, DecidedBy.RESPONSE_TYPE)),
        (200, {"ResultDesc": "ok"}, "Completed", Verdict(True, DecidedBy.RESPONSE_TYPE)),
        (200, {"ResultCode": ""}, "Cancelled", Verdict(False, DecidedBy.RESPONSE_TYPE)),
        (200, {"ResultCode": True}, "Cancelled", Verdict(False, DecidedBy.RESPONSE_TYPE)),
        (200, {"ResultCode": None}, "Completed", Verdict(True, DecidedBy.RESPONSE_TYPE)),
    ],
)
def test_validation_answers_decide_the_payment(
    status: int | None, answer: dict[str, Any] | None, response_type: str, expected: Verdict
) -> None:
    assert judge_validation_answer(status, answer, response_type) == expected


def test_third_party_trans_id_is_kept_only_when_accepted() -> None:
    accepted = judge_validation_answer(200, {"ResultCode": "0", "ThirdPartyTransID": 42}, "x")
    assert accepted.third_party_trans_id == "42"
    rejected = {"ResultCode": "C2B00013", "ThirdPartyTransID": "DUKA-1"}
    assert judge_validation_answer(200, rejected, "Completed").third_party_trans_id == ""


# --- payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msisdn", "masked"),
    [("254712345126", "2547 ***** 126"), ("254112345678", "2541 ***** 678")],
)
def test_msisdn_is_masked_the_v2_way(msisdn: str, masked: str) -> None:
    assert mask_msisdn(msisdn) == masked


def _payment(**changes: Any) -> C2BPayment:
    request = C2BPayRequest("174379", "CustomerPayBillOnline", 5, "254712345126", "Sample")
    payment = C2BPayment(
        trans_id="RKL51ZDR4F",
        originator_conversation_id="6e86-45dd-91ac-fd5d4178ab52",
        request=request,
        first_name="NICHOLAS",
        trans_time="20231121121325",
        org_account_balance="25.00",
        third_party_trans_id="DUKA-9",
    )
    for name, value in changes.items():
        setattr(payment, name, value)
    return payment


def test_confirmation_matches_darajas_sample_field_for_field() -> None:
    assert confirmation_payload(_payment()) == {
        "TransactionType": "Pay Bill",
        "TransID": "RKL51ZDR4F",
        "TransTime": "20231121121325",
        "TransAmount": "5.00",
        "BusinessShortCode": "174379",
        "BillRefNumber": "Sample",
        "InvoiceNumber": "",
        "OrgAccountBalance": "25.00",
        "ThirdPartyTransID": "DUKA-9",
        "MSISDN": "2547 ***** 126",
        "FirstName": "NICHOLAS",
        "MiddleName": "",
        "LastName": "",
    }


def test_validation_payload_has_no_balance_and_nothing_to_echo() -> None:
    payment = _payment()
    validation = validation_payload(payment)
    assert (validation["OrgAccountBalance"], validation["ThirdPartyTransID"]) == ("", "")
    assert validation == {
        **confirmation_payload(payment),
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
    }


def test_synchronous_answers_use_the_misspelt_key_and_string_codes() -> None:
    assert registered_body("abc") == {
        "OriginatorCoversationID": "abc",
        "ResponseCode": "0",
        "ResponseDescription": "Success",
    }
    assert simulate_accepted_body("abc")["ResponseDescription"] == (
        "Accept the service request successfully."
    )


def test_originator_conversation_ids_look_like_darajas() -> None:
    first, second = IdFactory.originator_conversation_id(), IdFactory.originator_conversation_id()
    assert re.fullmatch(r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}", first)
    assert first != second
