"""Daraja's C2B request checks as pure functions: a body passes or raises ``RequestRejectedError``.

The rules follow daraja.md §8. Fields are checked in the order below and the first failure wins;
every error is ``400.002.02 "Bad Request - Invalid <field>"``.

``registerurl`` (v1 and v2):

- ``ShortCode``: the simulated merchant's short code (number or digit string).
- ``ResponseType``: exactly ``Completed`` or ``Cancelled``, in sentence case.
- ``ConfirmationURL``, ``ValidationURL``: absolute http(s), none of Safaricom's banned words.

``simulate`` (sandbox only):

- ``ShortCode``: as above.
- ``CommandID``: ``CustomerPayBillOnline`` for a paybill. A simulator configured with a
  ``till_number`` plays a till, which only takes ``CustomerBuyGoodsOnline``.
- ``Amount``: whole shillings, 1..250 000, a JSON integer or a digit string (as for STK).
- ``Msisdn``: ``2547XXXXXXXX`` or ``2541XXXXXXXX``, number or string.
- ``BillRefNumber``: what the customer typed as the account, 1 to 20 characters for a
  paybill; empty (or absent) for a till, which has no account number.

Daraja does not say what a body not declared as JSON gets on these endpoints; the simulator
answers ``400.002.05 Invalid Request Payload`` rather than borrow STK's short-code quirk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payments.simulator.config import SimulatorConfig
from payments.simulator.errors import INVALID_PAYLOAD, RequestRejectedError, bad_request
from payments.simulator.validation import (
    BUY_GOODS,
    PAYBILL,
    check_amount,
    check_merchant_url,
    check_msisdn,
    digit_text,
    parse_json_object,
)

COMPLETED = "Completed"
CANCELLED = "Cancelled"
RESPONSE_TYPES = frozenset({COMPLETED, CANCELLED})
MAX_BILL_REF_NUMBER = 20


@dataclass(frozen=True)
class C2BRegistration:
    """A merchant's registered C2B URLs; ``response_type`` applies when validation is silent."""

    short_code: str
    response_type: str
    confirmation_url: str
    validation_url: str


@dataclass(frozen=True)
class C2BPayRequest:
    """A simulate body that passed every check, numeric fields normalised to strings."""

    short_code: str
    command_id: str
    amount: int
    msisdn: str
    bill_ref_number: str


def parse_c2b_body(content_type: str, raw_body: str) -> dict[str, Any]:
    """The body as a JSON object, else ``400.002.05 Invalid Request Payload``."""
    if content_type.lower() != "application/json":
        raise RequestRejectedError(INVALID_PAYLOAD)
    return parse_json_object(raw_body)


def validate_registration(body: Mapping[str, Any], config: SimulatorConfig) -> C2BRegistration:
    """Check a ``registerurl`` body field by field, as Daraja does."""
    short_code = check_c2b_short_code(body.get("ShortCode"), config)
    response_type = body.get("ResponseType")
    if not isinstance(response_type, str) or response_type not in RESPONSE_TYPES:
        raise RequestRejectedError(bad_request("ResponseType"))
    return C2BRegistration(
        short_code=short_code,
        response_type=response_type,
        confirmation_url=check_merchant_url(body.get("ConfirmationURL"), "ConfirmationURL"),
        validation_url=check_merchant_url(body.get("ValidationURL"), "ValidationURL"),
    )


def validate_pay_request(body: Mapping[str, Any], config: SimulatorConfig) -> C2BPayRequest:
    """Check a ``c2b/v1/simulate`` body; whether URLs are registered is the caller's business."""
    short_code = check_c2b_short_code(body.get("ShortCode"), config)
    command_id = check_command_id(body.get("CommandID"), config)
    amount = check_amount(body.get("Amount"))
    msisdn = check_msisdn(body.get("Msisdn"), "Msisdn")
    return C2BPayRequest(
        short_code=short_code,
        command_id=command_id,
        amount=amount,
        msisdn=msisdn,
        bill_ref_number=check_bill_ref_number(body.get("BillRefNumber"), command_id),
    )


def expected_command_id(config: SimulatorConfig) -> str:
    """What the simulated merchant takes: Buy Goods when it plays a till, else Pay Bill."""
    return BUY_GOODS if config.till_number is not None else PAYBILL


def check_c2b_short_code(value: object, config: SimulatorConfig) -> str:
    # Unlike STK (500 "Merchant does not exist"), C2B names the field for a foreign code too.
    text = digit_text(value)
    if text is None or text != config.short_code:
        raise RequestRejectedError(bad_request("ShortCode"))
    return text


def check_command_id(value: object, config: SimulatorConfig) -> str:
    if value != expected_command_id(config):
        raise RequestRejectedError(bad_request("CommandID"))
    return PAYBILL if value == PAYBILL else BUY_GOODS


def check_bill_ref_number(value: object, command_id: str) -> str:
    if command_id == BUY_GOODS:
        # Tills have no account number: Daraja sends BillRefNumber empty (daraja.md §8).
        if value is None or value == "":
            return ""
        raise RequestRejectedError(bad_request("BillRefNumber"))
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_BILL_REF_NUMBER:
        raise RequestRejectedError(bad_request("BillRefNumber"))
    return text
