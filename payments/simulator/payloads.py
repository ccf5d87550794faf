"""The JSON bodies the simulator sends, in Daraja's exact shapes (daraja.md §1.2, §2.5, §3, §4).

Types matter here because clients trip over them: ``expires_in`` and the query's
``ResultCode`` are strings, the callback's ``ResultCode`` is a number (except ``"SFC_IC0003"``),
``TransactionDate`` and ``PhoneNumber`` are numbers, ``Balance`` has no value, and ``Amount`` is
written ``1250.00``, a form ``json.dumps`` cannot produce from a Python number.
"""

from __future__ import annotations

import json
from typing import Any

from payments.simulator.errors import BEING_PROCESSED, DarajaError
from payments.simulator.state import SimTransaction

PUSH_ACCEPTED = "Success. Request accepted for processing"
QUERY_ANSWERED = "The service request has been accepted successfully"
# Stands in for the Amount while encoding; replaced by the two-decimal number text afterwards.
_AMOUNT_PLACEHOLDER = "\x00duka-sim-amount\x00"


def error_body(error: DarajaError, request_id: str) -> dict[str, str]:
    return {
        "requestId": request_id,
        "errorCode": error.error_code,
        "errorMessage": error.error_message,
    }


def token_body(access_token: str, lifetime_seconds: int) -> dict[str, str]:
    # A string, as older Daraja sends it; clients must int() it (daraja.md §1.2).
    return {"access_token": access_token, "expires_in": str(lifetime_seconds)}


def push_accepted_body(merchant_request_id: str, checkout_request_id: str) -> dict[str, str]:
    return {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_request_id,
        "ResponseCode": "0",
        "ResponseDescription": PUSH_ACCEPTED,
        "CustomerMessage": PUSH_ACCEPTED,
    }


def being_processed_body(checkout_request_id: str) -> dict[str, str]:
    # Daraja's sample echoes the CheckoutRequestID as the requestId (daraja.md §4.3).
    return error_body(BEING_PROCESSED, checkout_request_id)


def query_result_body(transaction: SimTransaction) -> dict[str, str]:
    """A resolved transaction: no receipt, amount or date, only the codes (daraja.md §4.2)."""
    return {
        "ResponseCode": "0",
        "ResponseDescription": QUERY_ANSWERED,
        "MerchantRequestID": transaction.merchant_request_id,
        "CheckoutRequestID": transaction.checkout_request_id,
        "ResultCode": transaction.outcome.result_code,
        "ResultDesc": transaction.outcome.result_desc,
    }


def callback_json(transaction: SimTransaction, *, transaction_date: str) -> str:
    """The callback body as JSON text, with ``Amount`` written as e.g. ``1250.00``.

    ``transaction_date`` is the ``YYYYMMDDHHmmss`` Nairobi time the payment completed.
    """
    outcome = transaction.outcome
    code = outcome.result_code
    stk_callback: dict[str, Any] = {
        "MerchantRequestID": transaction.merchant_request_id,
        "CheckoutRequestID": transaction.checkout_request_id,
        "ResultCode": int(code) if code.isdigit() else code,
        "ResultDesc": outcome.result_desc,
    }
    if outcome.succeeded:
        stk_callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": _AMOUNT_PLACEHOLDER},
                {"Name": "MpesaReceiptNumber", "Value": transaction.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(transaction_date)},
                {"Name": "PhoneNumber", "Value": int(transaction.push.phone_number)},
            ]
        }
    text = json.dumps({"Body": {"stkCallback": stk_callback}})
    placeholder = json.dumps(_AMOUNT_PLACEHOLDER)
    return text.replace(placeholder, f"{transaction.paid_amount}.00")
