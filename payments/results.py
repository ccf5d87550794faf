"""Reading Daraja's STK results: the callback body, and the STK query answer.

Both become one ``StkResult`` so that a single function applies them. Callback quirks
handled here (daraja.md §3.3): ``Item`` is a Name/Value list whose members vary,
``Balance`` may have no ``Value``, ``Amount`` may be ``1.00``, ``TransactionDate`` and
``PhoneNumber`` are JSON numbers, ``ResultCode`` is a number or a string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from payments.credentials import parse_daraja_timestamp
from payments.result_codes import SUCCESS_CODE, normalize_result_code


class ResultSource(StrEnum):
    CALLBACK = "callback"
    QUERY = "query"
    C2B = "c2b"  # a Paybill payment made by hand, matched by its account number
    MATCH = "match"  # money the merchant attached to an order (/match)


class MalformedCallback(ValueError):
    """The callback body cannot be used; ``str(exc)`` says why (it goes back to the sender)."""


@dataclass(frozen=True, slots=True)
class StkResult:
    checkout_request_id: str
    merchant_request_id: str
    result_code: str
    result_desc: str
    source: ResultSource
    amount: Decimal | None = None  # callbacks only: the query answer carries no metadata
    receipt: str | None = None
    transaction_at: datetime | None = None
    msisdn: str | None = None
    # The attempt whose own callback URL this arrived at (None: the bare base URL).
    attempt_id: int | None = None
    # From a sender we cannot vouch for: a success pays nothing until an STK query confirms it.
    needs_confirmation: bool = False

    @property
    def succeeded(self) -> bool:
        return self.result_code == SUCCESS_CODE


def load_daraja_json(body: bytes, what: str = "number") -> Any:
    """A Daraja body as JSON, numbers exact (Decimal); ``MalformedCallback`` if it is not.
    ``what`` names what NaN or Infinity would stand in for (C2B sends only strings)."""

    def reject_constant(name: str) -> None:
        raise MalformedCallback(f"{name} is not a {what} Daraja sends")

    try:
        return json.loads(body, parse_float=Decimal, parse_constant=reject_constant)
    except MalformedCallback:
        raise
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also a 5000-digit integer
        raise MalformedCallback(f"body is not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedCallback("body is nested too deeply") from None


def parse_callback(body: bytes) -> StkResult:
    """Parse an STK callback body or raise ``MalformedCallback`` with the reason."""
    document = load_daraja_json(body)
    callback = _object(_object(document, "top level").get("Body"), "Body")
    stk = _object(callback.get("stkCallback"), "Body.stkCallback")
    checkout_id = _limited(_required_text(stk, "CheckoutRequestID"), "CheckoutRequestID", 64)
    if "ResultCode" not in stk:
        raise MalformedCallback("Body.stkCallback.ResultCode is missing")
    try:
        result_code = _limited(normalize_result_code(stk["ResultCode"]), "ResultCode", 32)
    except ValueError as exc:
        raise MalformedCallback(f"Body.stkCallback.ResultCode is invalid ({exc})") from None
    outcome = StkResult(
        checkout_request_id=checkout_id,
        merchant_request_id=_limited(
            _optional_text(stk, "MerchantRequestID"), "MerchantRequestID", 64
        ),
        result_code=result_code,
        result_desc=_optional_text(stk, "ResultDesc"),
        source=ResultSource.CALLBACK,
    )
    if result_code != SUCCESS_CODE:
        return outcome

    items = _metadata_items(stk)
    receipt = items.get("MpesaReceiptNumber")
    if not isinstance(receipt, str) or not receipt.strip():
        raise MalformedCallback("a successful callback has no MpesaReceiptNumber")
    return replace(
        outcome,
        amount=_amount(items.get("Amount")),
        receipt=_limited(receipt.strip(), "MpesaReceiptNumber", 32),
        transaction_at=_transaction_date(items.get("TransactionDate")),
        msisdn=_msisdn(items.get("PhoneNumber")),
    )


def parse_query_answer(answer: dict[str, Any]) -> StkResult:
    """A completed STK query answer (HTTP 200, ``ResponseCode`` "0"); its codes are strings."""
    try:
        return StkResult(
            checkout_request_id=str(answer["CheckoutRequestID"]),
            merchant_request_id=str(answer.get("MerchantRequestID", "")),
            result_code=normalize_result_code(answer["ResultCode"]),
            result_desc=str(answer.get("ResultDesc", "")),
            source=ResultSource.QUERY,
        )
    except (KeyError, ValueError) as exc:
        raise MalformedCallback(f"STK query answer lacks a usable field ({exc})") from None


def _limited(text: str, field: str, limit: int) -> str:
    if len(text) > limit:
        raise MalformedCallback(f"{field} is longer than {limit} characters")
    return storable(text, field)


def storable(text: str, field: str) -> str:
    """Text a database can hold: no NUL (PostgreSQL refuses it) and no lone surrogate (a
    ``\\ud800`` escape; SQLite refuses it). Daraja sends neither."""
    if "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text):
        raise MalformedCallback(f"{field} has characters no M-Pesa field has")
    return text


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedCallback(f"{where} is missing or not an object")
    return value


def _required_text(container: dict[str, Any], key: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedCallback(f"Body.stkCallback.{key} is missing or empty")
    return value.strip()


def _optional_text(container: dict[str, Any], key: str) -> str:
    value = container.get(key)
    return "" if value is None else storable(str(value)[:1000], key)


def _metadata_items(stk: dict[str, Any]) -> dict[str, Any]:
    metadata = _object(stk.get("CallbackMetadata"), "Body.stkCallback.CallbackMetadata")
    items = metadata.get("Item")
    if not isinstance(items, list):
        raise MalformedCallback("CallbackMetadata.Item is missing or not a list")
    found: dict[str, Any] = {}
    for item in items:
        # By name, never by position: Balance comes and goes, sometimes without a Value.
        if isinstance(item, dict) and isinstance(item.get("Name"), str) and "Value" in item:
            found[item["Name"]] = item["Value"]
    return found


# Bounds for an amount Daraja reports. Anything outside is refused before any arithmetic:
# a huge exponent (1e1000000) costs seconds of CPU in comparisons and cannot be stored.
MAX_REPORTED_AMOUNT = Decimal(10_000_000)
_CENTS = Decimal("0.01")


def parse_amount(value: object, field: str = "Amount") -> Decimal:
    """A reported amount: finite, KES 1 to 10,000,000, at most two decimals."""
    if isinstance(value, bool) or value is None:
        raise MalformedCallback(f"{field} is missing")
    text = str(value).strip()
    if len(text) > 32:
        raise MalformedCallback(f"{field} is not a plausible amount")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise MalformedCallback(f"{field} {text!r} is not a number") from None
    if not amount.is_finite():
        raise MalformedCallback(f"{field} {text!r} is not a finite number")
    if not 1 <= amount <= MAX_REPORTED_AMOUNT:
        raise MalformedCallback(f"{field} {text!r} is not between 1 and 10,000,000")
    if amount != amount.quantize(_CENTS):
        raise MalformedCallback(f"{field} {text!r} has more than two decimals")
    return amount


def _amount(value: object) -> Decimal:
    if value is None:
        raise MalformedCallback("a successful callback has no Amount")
    return parse_amount(value)


def _transaction_date(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_daraja_timestamp(str(value))
    except ValueError:
        return None  # the receipt is what matters; a garbled date is not worth refusing money


def _msisdn(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    # A full MSISDN is 12 digits; anything else (masked, garbled) is not a number we can use.
    return text if text.isdigit() and len(text) == 12 else None
