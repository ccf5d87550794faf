"""The simulator's pure parts: outcome rules, Daraja field validation, payload shapes, state."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from payments.credentials import NAIROBI, daraja_timestamp, stk_password
from payments.simulator import rules
from payments.simulator.config import SANDBOX_PASSKEY, SimulatorConfig
from payments.simulator.errors import DarajaError, RequestRejectedError, bad_request
from payments.simulator.payloads import callback_json, query_result_body, token_body
from payments.simulator.rules import (
    CallbackMode,
    Outcome,
    amount_mismatch,
    choose_outcome,
    rules_summary,
)
from payments.simulator.state import IdFactory, SimTransaction, TokenStore
from payments.simulator.validation import (
    StkPushRequest,
    bearer_token,
    check_basic_auth,
    check_content_type,
    check_grant_type,
    parse_json_object,
    validate_push,
    validate_query,
)

NOW = datetime(2026, 11, 26, 14, 30, 5, 123000, tzinfo=NAIROBI)
TS = daraja_timestamp(NOW)
CONFIG = SimulatorConfig()
# Marks a field to leave out of the body.
_MISSING = object()


def good_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "BusinessShortCode": "174379",
        "Password": stk_password("174379", SANDBOX_PASSKEY, TS),
        "Timestamp": TS,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 1250,
        "PartyA": "254708374149",
        "PartyB": "174379",
        "PhoneNumber": "254708374149",
        "CallBackURL": "https://shop.example.co.ke/hooks/stk/s3cr3t",
        "AccountReference": "DK-7F3K2Q",
        "TransactionDesc": "Duka order",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _MISSING}


def push_for(phone: str, amount: int = 100, **changes: Any) -> StkPushRequest:
    return validate_push(
        good_body(PartyA=phone, PhoneNumber=phone, Amount=amount, **changes), CONFIG, NOW
    )


def rejected(body: dict[str, Any], config: SimulatorConfig = CONFIG) -> DarajaError:
    with pytest.raises(RequestRejectedError) as caught:
        validate_push(body, config, NOW)
    return caught.value.error


# --- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("001", rules.CANCELLED_BY_USER),
        ("002", rules.NO_ANSWER),
        ("003", rules.WRONG_PIN),
        ("004", rules.INSUFFICIENT_FUNDS),
        ("005", rules.DUPLICATE_CALLBACK),
        ("006", rules.DROPPED_CALLBACK),
        ("007", rules.NEVER_RESOLVES),
        ("008", rules.SUBSCRIBER_LOCKED),
        ("000", rules.SUCCESS),
        ("149", rules.SUCCESS),
        ("010", rules.SUCCESS),
    ],
)
def test_phone_suffix_picks_the_outcome(suffix: str, expected: Outcome) -> None:
    """The last three digits of PartyA choose how the push ends."""
    outcome = choose_outcome(
        push_for(f"254712345{suffix}"), till_number=None, prior_pushes_from_phone=0
    )
    assert outcome == expected


def test_rule_outcomes_carry_safaricom_codes_and_modes() -> None:
    """Each canned outcome has Safaricom's code, text and the intended delivery behaviour."""
    assert (rules.CANCELLED_BY_USER.result_code, rules.NO_ANSWER.result_code) == ("1032", "1037")
    assert rules.NO_ANSWER.result_desc == "DS timeout user cannot be reached."
    assert (rules.WRONG_PIN.result_code, rules.WRONG_PIN.result_desc) == (
        "2001",
        "The initiator information is invalid.",
    )
    assert rules.INSUFFICIENT_FUNDS.result_desc == (
        "The balance is insufficient for the transaction."
    )
    assert rules.DUPLICATE_CALLBACK.callback is CallbackMode.TWICE
    assert rules.DUPLICATE_CALLBACK.succeeded
    assert rules.DROPPED_CALLBACK.callback is CallbackMode.DROPPED
    assert rules.NEVER_RESOLVES.never_resolves
    assert rules.SUBSCRIBER_LOCKED.sync_error == DarajaError(
        500,
        "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    )
    assert rules.SUCCESS.result_desc == "The service request is processed successfully."


@pytest.mark.parametrize(("requested", "paid"), [(100, 99), (2, 1), (1, 2), (250_000, 249_999)])
def test_amount_mismatch_rule_pays_a_different_amount(requested: int, paid: int) -> None:
    """Rule 009: the callback reports requested - 1, or 2 when only 1 was requested."""
    outcome = choose_outcome(
        push_for("254712345009", amount=requested), till_number=None, prior_pushes_from_phone=0
    )
    assert outcome == amount_mismatch(requested)
    assert outcome.succeeded
    assert outcome.paid_amount == paid


def test_rule_011_fails_first_then_succeeds() -> None:
    """Rule 011: the phone's first push is cancelled, later ones go through."""
    push = push_for("254712345011")
    first = choose_outcome(push, till_number=None, prior_pushes_from_phone=0)
    later = choose_outcome(push, till_number=None, prior_pushes_from_phone=1)
    assert first == rules.CANCELLED_BY_USER
    assert later == rules.SUCCESS


def test_buy_goods_with_the_wrong_till_is_sfc_ic0003() -> None:
    """A till mismatch ends in the string ResultCode, whatever the phone's rule."""
    push = push_for("254712345005", TransactionType="CustomerBuyGoodsOnline", PartyB="600100")
    outcome = choose_outcome(push, till_number="600200", prior_pushes_from_phone=0)
    assert outcome == Outcome("SFC_IC0003", "The operator does not exist.")
    unconfigured = choose_outcome(push, till_number=None, prior_pushes_from_phone=0)
    assert unconfigured.result_code == "SFC_IC0003"


def test_buy_goods_with_the_right_till_follows_the_phone_rules() -> None:
    push = push_for("254712345001", TransactionType="CustomerBuyGoodsOnline", PartyB="600100")
    assert choose_outcome(push, till_number="600100", prior_pushes_from_phone=0) == (
        rules.CANCELLED_BY_USER
    )


def test_every_rule_is_in_the_summary_and_the_module_docstring() -> None:
    """The printed summary and the documentation cannot drift from the rule table."""
    summary = rules_summary()
    assert rules.__doc__ is not None
    for rule in rules.RULES:
        assert f"...{rule.suffix}" in summary
        assert f"…{rule.suffix}" in rules.__doc__
    assert "SFC_IC0003" in summary


# --- validation: good bodies ------------------------------------------------------------------


def test_a_good_push_body_passes_and_is_normalised() -> None:
    push = validate_push(good_body(), CONFIG, NOW)
    assert push == StkPushRequest(
        business_short_code="174379",
        timestamp=TS,
        transaction_type="CustomerPayBillOnline",
        amount=1250,
        party_a="254708374149",
        party_b="174379",
        phone_number="254708374149",
        callback_url="https://shop.example.co.ke/hooks/stk/s3cr3t",
        account_reference="DK-7F3K2Q",
        transaction_desc="Duka order",
    )


def test_numeric_fields_may_be_json_numbers_or_digit_strings() -> None:
    """Daraja's samples send numbers both ways; both are accepted."""
    body = good_body(
        BusinessShortCode=174379,
        Amount="1250",
        PartyA=254708374149,
        PartyB=174379,
        PhoneNumber=254112345678,
        TransactionDesc=_MISSING,
    )
    push = validate_push(body, CONFIG, NOW)
    assert (push.business_short_code, push.amount, push.party_a, push.phone_number) == (
        "174379",
        1250,
        "254708374149",
        "254112345678",
    )
    assert push.transaction_desc is None


def test_the_official_password_test_vector_is_accepted() -> None:
    """daraja.md appendix: 174379 + sandbox passkey + 20210628092408."""
    then = datetime(2021, 6, 28, 9, 30, tzinfo=NAIROBI)
    body = good_body(
        Timestamp="20210628092408",
        Password="MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkxOTIwMjEwNjI4MDkyNDA4",
    )
    assert validate_push(body, CONFIG, then).timestamp == "20210628092408"


def test_buy_goods_accepts_any_numeric_party_b_at_validation() -> None:
    """The till check happens later (callback SFC_IC0003), as on Daraja."""
    push = validate_push(
        good_body(TransactionType="CustomerBuyGoodsOnline", PartyB="5512345"), CONFIG, NOW
    )
    assert push.party_b == "5512345"


# --- validation: each bad field -----------------------------------------------------------------

_STALE = daraja_timestamp(NOW - timedelta(seconds=3601))
_FUTURE = daraja_timestamp(NOW + timedelta(hours=2))


_NO_MERCHANT = DarajaError(500, "500.001.1001", "Merchant does not exist")
_WRONG_CREDENTIALS = DarajaError(500, "500.001.1001", "[MerchantValidate] - Wrong credentials")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"BusinessShortCode": "1234"}, bad_request("BusinessShortCode")),
        ({"BusinessShortCode": "12345678"}, bad_request("BusinessShortCode")),
        ({"BusinessShortCode": "17437a"}, bad_request("BusinessShortCode")),
        ({"BusinessShortCode": _MISSING}, bad_request("BusinessShortCode")),
        ({"BusinessShortCode": "600100"}, _NO_MERCHANT),
        ({"Timestamp": "2026112614300"}, bad_request("Timestamp")),
        ({"Timestamp": "20261326143005"}, bad_request("Timestamp")),
        ({"Timestamp": int(TS)}, bad_request("Timestamp")),
        ({"Timestamp": _STALE}, bad_request("Timestamp")),
        ({"Timestamp": _FUTURE}, bad_request("Timestamp")),
        ({"Password": "bm9wZQ=="}, _WRONG_CREDENTIALS),
        ({"Password": _MISSING}, _WRONG_CREDENTIALS),
        ({"TransactionType": "CustomerPayBill"}, bad_request("TransactionType")),
        ({"Amount": 10.5}, bad_request("Amount")),
        ({"Amount": 10.0}, bad_request("Amount")),
        ({"Amount": "10.50"}, bad_request("Amount")),
        ({"Amount": 0}, bad_request("Amount")),
        ({"Amount": 250_001}, bad_request("Amount")),
        ({"Amount": True}, bad_request("Amount")),
        ({"PartyA": "0708374149"}, bad_request("PartyA")),
        ({"PartyA": "+254708374149"}, bad_request("PartyA")),
        ({"PartyA": "254208374149"}, bad_request("PartyA")),
        ({"PhoneNumber": "25470837414"}, bad_request("PhoneNumber")),
        ({"PhoneNumber": "25470837414\u0669"}, bad_request("PhoneNumber")),  # Arabic-Indic 9
        ({"PartyB": "600100"}, bad_request("PartyB")),
        ({"PartyB": "abc"}, bad_request("PartyB")),
        ({"CallBackURL": "ftp://shop.example/hooks"}, bad_request("CallBackURL")),
        ({"CallBackURL": "/hooks/stk"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/ hooks"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/MPesa/cb"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/m-pesa"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://safaricom.shop.example/"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/stk/Query"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/run.exe"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/cmd"}, bad_request("CallBackURL")),
        ({"CallBackURL": "https://shop.example/sql"}, bad_request("CallBackURL")),
        ({"AccountReference": ""}, bad_request("AccountReference")),
        ({"AccountReference": "DK-7F3K2Q-XYZ"}, bad_request("AccountReference")),
        ({"AccountReference": _MISSING}, bad_request("AccountReference")),
        ({"TransactionDesc": "Duka order 1234"}, bad_request("TransactionDesc")),
    ],
)
def test_each_bad_field_gives_darajas_error(changes: dict[str, Any], expected: DarajaError) -> None:
    """One wrong field at a time: the status, errorCode and errorMessage Daraja would give."""
    assert rejected(good_body(**changes)) == expected


def test_field_errors_are_400_with_the_field_named() -> None:
    assert bad_request("Amount") == DarajaError(400, "400.002.02", "Bad Request - Invalid Amount")


def test_the_password_must_use_the_body_timestamp() -> None:
    """A timestamp generated twice (one second apart) is "Wrong credentials"."""
    later = daraja_timestamp(NOW + timedelta(seconds=1))
    body = good_body(Password=stk_password("174379", SANDBOX_PASSKEY, later))
    assert rejected(body).error_message == "[MerchantValidate] - Wrong credentials"


def test_the_configured_short_code_is_the_merchant() -> None:
    config = SimulatorConfig(short_code="600100", passkey="k")
    body = good_body(
        BusinessShortCode="600100", PartyB="600100", Password=stk_password("600100", "k", TS)
    )
    assert validate_push(body, config, NOW).business_short_code == "600100"
    assert rejected(good_body(), config).error_message == "Merchant does not exist"


def test_the_first_bad_field_wins() -> None:
    body = good_body(Amount=0, PartyA="0700")
    assert rejected(body) == bad_request("Amount")


def test_a_good_query_passes_and_bad_ones_are_refused() -> None:
    body: dict[str, Any] = {
        "BusinessShortCode": "174379",
        "Password": stk_password("174379", SANDBOX_PASSKEY, TS),
        "Timestamp": TS,
        "CheckoutRequestID": "ws_CO_26112026143005123708374149",
    }
    assert validate_query(body, CONFIG, NOW).checkout_request_id == body["CheckoutRequestID"]
    cases: list[tuple[dict[str, Any], DarajaError]] = [
        ({"CheckoutRequestID": ""}, bad_request("CheckoutRequestID")),
        ({"CheckoutRequestID": 5}, bad_request("CheckoutRequestID")),
        ({"Password": "x"}, _WRONG_CREDENTIALS),
        ({"Timestamp": _STALE}, bad_request("Timestamp")),
    ]
    for changes, expected in cases:
        with pytest.raises(RequestRejectedError) as caught:
            validate_query({**body, **changes}, CONFIG, NOW)
        assert caught.value.error == expected


# --- HTTP-level checks --------------------------------------------------------------------------


def _basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def test_basic_auth_accepts_only_the_configured_pair() -> None:
    check_basic_auth(_basic("duka-sim-key", "duka-sim-secret"), CONFIG)
    for header in [
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        _basic("duka-sim-key", "wrong"),
        _basic("wrong", "duka-sim-secret"),
    ]:
        with pytest.raises(RequestRejectedError) as caught:
            check_basic_auth(header, CONFIG)
        assert caught.value.error == DarajaError(400, "400.008.01", "Invalid Authentication passed")


def test_grant_type_must_be_client_credentials() -> None:
    check_grant_type("client_credentials")
    for grant_type in [None, "", "password", "client_credentials "]:
        with pytest.raises(RequestRejectedError) as caught:
            check_grant_type(grant_type)
        assert caught.value.error == DarajaError(400, "400.008.02", "Invalid grant type passed")


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc123") == "abc123"
    assert bearer_token("bearer abc123") == "abc123"
    assert bearer_token("Bearer ") is None
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


def test_a_non_json_content_type_is_an_invalid_short_code() -> None:
    """Daraja's quirk for data= instead of json= (daraja.md §2, FAQ 9)."""
    check_content_type("application/json")
    with pytest.raises(RequestRejectedError) as caught:
        check_content_type("application/x-www-form-urlencoded")
    assert caught.value.error == bad_request("BusinessShortCode")


@pytest.mark.parametrize("raw", ["", "{", "[1, 2]", '"text"', "null"])
def test_a_body_that_is_not_a_json_object_is_an_invalid_payload(raw: str) -> None:
    with pytest.raises(RequestRejectedError) as caught:
        parse_json_object(raw)
    assert caught.value.error == DarajaError(400, "400.002.05", "Invalid Request Payload")


# --- payloads -----------------------------------------------------------------------------------


def _transaction(
    outcome: Outcome, amount: int = 1250, receipt: str | None = "NLJ7RT61SV"
) -> SimTransaction:
    return SimTransaction(
        checkout_request_id="ws_CO_26112026143005123708374149",
        merchant_request_id="2654-4b64-97ff-b827b542881d3130",
        push=push_for("254708374149", amount=amount),
        outcome=outcome,
        requested_at=NOW,
        resolved_at=NOW,
        receipt="NLJ7RT61SV" if outcome.succeeded else None,
    )


def test_success_callback_has_daraja_exact_shape() -> None:
    """Amount as 1250.00, a valueless Balance, TransactionDate and PhoneNumber as numbers."""
    text = callback_json(_transaction(rules.SUCCESS), transaction_date="20261126143010")
    assert re.search(r'"Value": 1250\.00\}', text)
    body = json.loads(text, parse_float=Decimal)
    callback = body["Body"]["stkCallback"]
    assert callback["ResultCode"] == 0
    assert callback["ResultDesc"] == "The service request is processed successfully."
    assert callback["CallbackMetadata"]["Item"] == [
        {"Name": "Amount", "Value": Decimal("1250.00")},
        {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
        {"Name": "Balance"},
        {"Name": "TransactionDate", "Value": 20261126143010},
        {"Name": "PhoneNumber", "Value": 254708374149},
    ]


def test_amount_mismatch_callback_reports_the_paid_amount() -> None:
    text = callback_json(_transaction(amount_mismatch(1250)), transaction_date="20261126143010")
    assert '"Value": 1249.00}' in text


def test_failure_callbacks_have_no_metadata_and_keep_the_code_type() -> None:
    cancelled = json.loads(
        callback_json(_transaction(rules.CANCELLED_BY_USER), transaction_date="20261126143010")
    )["Body"]["stkCallback"]
    assert cancelled["ResultCode"] == 1032
    assert "CallbackMetadata" not in cancelled
    operator = json.loads(
        callback_json(
            _transaction(rules.OPERATOR_DOES_NOT_EXIST), transaction_date="20261126143010"
        )
    )["Body"]["stkCallback"]
    assert operator["ResultCode"] == "SFC_IC0003"
    assert operator["ResultDesc"] == "The operator does not exist."


def test_query_answer_and_token_use_strings() -> None:
    answer = query_result_body(_transaction(rules.WRONG_PIN))
    assert answer["ResultCode"] == "2001"
    assert answer["ResponseCode"] == "0"
    assert "CallbackMetadata" not in answer
    assert token_body("t", 3599) == {"access_token": "t", "expires_in": "3599"}


# --- state --------------------------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_the_latest_token_is_valid_until_it_expires() -> None:
    clock = FakeMonotonic()
    store = TokenStore(3599, clock)
    first = store.issue()
    second = store.issue()
    assert first != second
    assert not store.is_valid(first)
    assert store.is_valid(second)
    clock.now += 3598
    assert store.is_valid(second)
    clock.now += 1
    assert not store.is_valid(second)
    third = store.issue()
    store.expire_all()
    assert not store.is_valid(third)
    assert not store.is_valid(None)


def test_ids_look_like_darajas_and_never_repeat() -> None:
    ids = IdFactory()
    checkout_ids = {ids.checkout_request_id(NOW, "254708374149") for _ in range(50)}
    assert len(checkout_ids) == 50
    assert all(c.startswith("ws_CO_26112026143005123708374149") for c in checkout_ids)
    receipts = {ids.receipt_number() for _ in range(500)}
    assert len(receipts) == 500
    assert all(re.fullmatch(r"[A-Z][A-Z0-9]{9}", r) for r in receipts)
    assert re.fullmatch(
        r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{16}", ids.merchant_request_id()
    )


def test_config_repr_hides_the_secrets() -> None:
    text = repr(SimulatorConfig(consumer_secret="hunter2", passkey="passkey-value"))
    assert "hunter2" not in text
    assert "passkey-value" not in text
