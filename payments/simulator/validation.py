"""Daraja's request checks as pure functions: a body passes or raises ``RequestRejectedError``.

The rules follow daraja.md §1.2 and §2.1 to §2.3. Fields are checked in the order below and the
first failure wins, so a body with several mistakes reports the first one:

- ``BusinessShortCode``: 5 to 7 digits (JSON number or numeric string), else ``Invalid
  BusinessShortCode``; a well-formed code that is not the simulated merchant's gives HTTP 500
  ``Merchant does not exist``.
- ``Timestamp``: a 14-digit ``YYYYMMDDHHmmss`` string, a real date in Nairobi time and within the
  configured skew of "now", else ``Invalid Timestamp``.
- ``Password``: ``base64(BusinessShortCode + passkey + Timestamp)``, else HTTP 500
  ``[MerchantValidate] - Wrong credentials``.
- ``TransactionType``: ``CustomerPayBillOnline`` or ``CustomerBuyGoodsOnline``.
- ``Amount``: whole shillings, 1..250 000, as a JSON integer or a string of digits. A JSON float
  is refused even when it is whole (``10.0``): Daraja lists decimals as a cause of ``Invalid
  Amount`` and a client that sends floats is one rounding away from sending ``10.5``.
- ``PartyA`` / ``PhoneNumber``: ``2547XXXXXXXX`` or ``2541XXXXXXXX``, number or string.
- ``PartyB``: digits; for a Paybill it must equal ``BusinessShortCode``. (For Buy Goods a wrong
  till is accepted here and fails later in the callback, as on Daraja; see ``rules``.)
- ``CallBackURL``: absolute http(s) URL, no whitespace, none of Safaricom's banned words.
- ``AccountReference``: 1 to 12 characters. ``TransactionDesc``: optional, at most 13.

Every error is ``400.002.02`` unless stated. The HTTP-level checks (token, Content-Type, JSON
syntax) come first and live here too, so the routes only translate.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from payments.credentials import parse_daraja_timestamp, stk_password
from payments.simulator.config import SimulatorConfig
from payments.simulator.errors import (
    INVALID_AUTHENTICATION,
    INVALID_GRANT_TYPE,
    INVALID_PAYLOAD,
    MERCHANT_DOES_NOT_EXIST,
    WRONG_CREDENTIALS,
    RequestRejectedError,
    bad_request,
)

PAYBILL = "CustomerPayBillOnline"
BUY_GOODS = "CustomerBuyGoodsOnline"
TRANSACTION_TYPES = frozenset({PAYBILL, BUY_GOODS})
MIN_AMOUNT = 1
MAX_AMOUNT = 250_000
MAX_ACCOUNT_REFERENCE = 12
MAX_TRANSACTION_DESC = 13
# Safaricom bans these in callback URLs in any letter case (daraja.md §2.3).
BANNED_CALLBACK_WORDS = ("mpesa", "m-pesa", "safaricom", "exe", "exec", "cmd", "sql", "query")

# [0-9], not \d: \d also matches Arabic-Indic and other Unicode digits.
_MSISDN = re.compile(r"254[71][0-9]{8}")
_SHORT_CODE = re.compile(r"[0-9]{5,7}")


@dataclass(frozen=True)
class StkPushRequest:
    """A push body that passed every check, with numeric fields normalised to strings."""

    business_short_code: str
    timestamp: str
    transaction_type: str
    amount: int
    party_a: str
    party_b: str
    phone_number: str
    callback_url: str
    account_reference: str
    transaction_desc: str | None


@dataclass(frozen=True)
class StkQueryRequest:
    """A query body that passed every check."""

    business_short_code: str
    timestamp: str
    checkout_request_id: str


def check_grant_type(grant_type: str | None) -> None:
    """OAuth: only ``client_credentials`` exists."""
    if grant_type != "client_credentials":
        raise RequestRejectedError(INVALID_GRANT_TYPE)


def check_basic_auth(authorization: str | None, config: SimulatorConfig) -> None:
    """OAuth: ``Basic base64(key:secret)`` with the configured pair; anything else is 400.008.01."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise RequestRejectedError(INVALID_AUTHENTICATION)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RequestRejectedError(INVALID_AUTHENTICATION) from exc
    key, separator, secret = decoded.partition(":")
    # compare_digest on both halves, without short-circuiting, so timing reveals nothing.
    key_ok = hmac.compare_digest(key.encode(), config.consumer_key.encode())
    secret_ok = hmac.compare_digest(secret.encode(), config.consumer_secret.encode())
    if not (separator and key_ok and secret_ok):
        raise RequestRejectedError(INVALID_AUTHENTICATION)


def bearer_token(authorization: str | None) -> str | None:
    """The token from ``Authorization: Bearer <token>``, or None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def check_content_type(content_type: str) -> None:
    """Daraja's quirk: a body that is not declared JSON fails as an invalid short code."""
    if content_type.lower() != "application/json":
        raise RequestRejectedError(bad_request("BusinessShortCode"))


def parse_json_object(raw_body: str) -> dict[str, Any]:
    """The body as a JSON object, else ``400.002.05 Invalid Request Payload``."""
    try:
        body = json.loads(raw_body)
    except ValueError as exc:
        raise RequestRejectedError(INVALID_PAYLOAD) from exc
    if not isinstance(body, dict):
        raise RequestRejectedError(INVALID_PAYLOAD)
    return body


def validate_push(
    body: Mapping[str, Any], config: SimulatorConfig, now: datetime
) -> StkPushRequest:
    """Check an STK push body field by field, as Daraja does."""
    short_code = check_business_short_code(body.get("BusinessShortCode"), config)
    timestamp = check_timestamp(body.get("Timestamp"), now, config.timestamp_skew_seconds)
    check_password(body.get("Password"), short_code, config.passkey, timestamp)
    transaction_type = check_transaction_type(body.get("TransactionType"))
    amount = check_amount(body.get("Amount"))
    party_a = check_msisdn(body.get("PartyA"), "PartyA")
    phone_number = check_msisdn(body.get("PhoneNumber"), "PhoneNumber")
    party_b = check_party_b(body.get("PartyB"), transaction_type, short_code)
    return StkPushRequest(
        business_short_code=short_code,
        timestamp=timestamp,
        transaction_type=transaction_type,
        amount=amount,
        party_a=party_a,
        party_b=party_b,
        phone_number=phone_number,
        callback_url=check_callback_url(body.get("CallBackURL")),
        account_reference=check_account_reference(body.get("AccountReference")),
        transaction_desc=check_transaction_desc(body.get("TransactionDesc")),
    )


def validate_query(
    body: Mapping[str, Any], config: SimulatorConfig, now: datetime
) -> StkQueryRequest:
    """Check an STK query body; whether the ID is known is the caller's business."""
    short_code = check_business_short_code(body.get("BusinessShortCode"), config)
    timestamp = check_timestamp(body.get("Timestamp"), now, config.timestamp_skew_seconds)
    check_password(body.get("Password"), short_code, config.passkey, timestamp)
    checkout_request_id = body.get("CheckoutRequestID")
    if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
        raise RequestRejectedError(bad_request("CheckoutRequestID"))
    return StkQueryRequest(short_code, timestamp, checkout_request_id)


def check_business_short_code(value: object, config: SimulatorConfig) -> str:
    text = digit_text(value)
    if text is None or not _SHORT_CODE.fullmatch(text):
        raise RequestRejectedError(bad_request("BusinessShortCode"))
    if text != config.short_code:
        raise RequestRejectedError(MERCHANT_DOES_NOT_EXIST)
    return text


def check_timestamp(value: object, now: datetime, skew_seconds: int) -> str:
    if not isinstance(value, str):
        raise RequestRejectedError(bad_request("Timestamp"))
    try:
        moment = parse_daraja_timestamp(value)
    except ValueError as exc:  # wrong length, not digits, or no such date (month 13)
        raise RequestRejectedError(bad_request("Timestamp")) from exc
    if abs((moment - now).total_seconds()) > skew_seconds:
        raise RequestRejectedError(bad_request("Timestamp"))
    return value


def check_password(value: object, short_code: str, passkey: str, timestamp: str) -> None:
    expected = stk_password(short_code, passkey, timestamp)
    if not isinstance(value, str) or not hmac.compare_digest(value.encode(), expected.encode()):
        raise RequestRejectedError(WRONG_CREDENTIALS)


def check_transaction_type(value: object) -> str:
    if not isinstance(value, str) or value not in TRANSACTION_TYPES:
        raise RequestRejectedError(bad_request("TransactionType"))
    return value


def check_amount(value: object) -> int:
    text = digit_text(value)
    if text is None or not MIN_AMOUNT <= int(text) <= MAX_AMOUNT:
        raise RequestRejectedError(bad_request("Amount"))
    return int(text)


def check_msisdn(value: object, field: str) -> str:
    text = digit_text(value)
    if text is None or not _MSISDN.fullmatch(text):
        raise RequestRejectedError(bad_request(field))
    return text


def check_party_b(value: object, transaction_type: str, short_code: str) -> str:
    text = digit_text(value)
    if text is None or (transaction_type == PAYBILL and text != short_code):
        raise RequestRejectedError(bad_request("PartyB"))
    return text


def check_callback_url(value: object) -> str:
    return check_merchant_url(value, "CallBackURL")


def check_merchant_url(value: object, field: str) -> str:
    """A URL Daraja will POST to: absolute http(s), no whitespace, no banned word in any case.

    Shared by STK's ``CallBackURL`` and C2B's ``ConfirmationURL`` / ``ValidationURL``, which
    Safaricom screens by the same word list (daraja.md §2.3, §8).
    """
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise RequestRejectedError(bad_request(field))
    parts = urlsplit(value)
    lowered = value.lower()
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or any(word in lowered for word in BANNED_CALLBACK_WORDS)
    ):
        raise RequestRejectedError(bad_request(field))
    return value


def check_account_reference(value: object) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_ACCOUNT_REFERENCE:
        raise RequestRejectedError(bad_request("AccountReference"))
    return text


def check_transaction_desc(value: object) -> str | None:
    if value is None:  # optional on the v3 page (daraja.md §2.1)
        return None
    if not isinstance(value, str) or len(value) > MAX_TRANSACTION_DESC:
        raise RequestRejectedError(bad_request("TransactionDesc"))
    return value


def digit_text(value: object) -> str | None:
    """A non-negative JSON integer or an ASCII digit string as text; None for anything else.

    ``bool`` is excluded because ``True`` is an ``int`` in Python but not a number in JSON.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    return None
