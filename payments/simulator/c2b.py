"""C2B's pure parts: the payment record, the validation verdict and Daraja's exact payloads.

A C2B payment (daraja.md §8) goes::

    simulate / pay_bill ──► PENDING ──► validation off ─────────────────────────► COMPLETED
                                    └─► ValidationURL answers ResultCode "0" ────► COMPLETED
                                    └─► ValidationURL answers another code ──────► REJECTED
                                    └─► no usable answer: ResponseType Completed ► COMPLETED
                                                          ResponseType Cancelled ► REJECTED

Only a COMPLETED payment moves money and gets a confirmation. Unlike the STK callback, every
field of the validation and confirmation bodies is a string, ``TransAmount`` included, and the
phone number is masked the v2 way (``2547 ***** 126``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payments.simulator.c2b_validation import COMPLETED, C2BPayRequest
from payments.simulator.rules import CallbackMode
from payments.simulator.validation import BUY_GOODS

REGISTERED = "Success"
SIMULATE_ACCEPTED = "Accept the service request successfully."
# Daraja's sample shows only "Pay Bill"; "Buy Goods" for tills is an inference.
_TRANSACTION_TYPES = {BUY_GOODS: "Buy Goods"}
PAY_BILL_TYPE = "Pay Bill"


class C2BStatus(enum.Enum):
    PENDING = "pending"
    COMPLETED = "completed"
    REJECTED = "rejected"


class DecidedBy(enum.Enum):
    """What settled a payment: see the diagram in the module docstring."""

    NO_VALIDATION = "no_validation"
    VALIDATION = "validation"
    RESPONSE_TYPE = "response_type"


@dataclass(frozen=True)
class Verdict:
    """Whether a payment proceeds; ``result_code`` is the ValidationURL's, if it gave one."""

    accepted: bool
    decided_by: DecidedBy
    result_code: str | None = None
    third_party_trans_id: str = ""


NO_VALIDATION = Verdict(accepted=True, decided_by=DecidedBy.NO_VALIDATION)


@dataclass
class C2BPayment:
    """One customer payment to the simulated paybill (or till), and how it ended.

    ``result_code`` is what the ValidationURL answered (None when validation was off or gave
    no usable answer). ``confirmation`` says how the confirmation went out (None while pending
    and for a rejected payment). ``org_account_balance`` is the balance after this payment.
    """

    trans_id: str
    originator_conversation_id: str
    request: C2BPayRequest
    first_name: str
    trans_time: str
    status: C2BStatus = C2BStatus.PENDING
    decided_by: DecidedBy | None = None
    result_code: str | None = None
    third_party_trans_id: str = ""
    org_account_balance: str = ""
    confirmation: CallbackMode | None = None

    @property
    def rejected(self) -> bool:
        return self.status is C2BStatus.REJECTED

    @property
    def settled(self) -> bool:
        return self.status is not C2BStatus.PENDING


def judge_validation_answer(
    status: int | None, answer: Mapping[str, Any] | None, response_type: str
) -> Verdict:
    """The verdict from the ValidationURL's answer (``status`` None: it never answered).

    ``ResultCode`` "0" accepts, as a string or a number. Any other code rejects. No answer in
    time, a non-2xx status, or a body without a usable ``ResultCode`` is treated like silence:
    Daraja then applies the registered ``ResponseType``.
    """
    code = _result_code(answer) if status is not None and 200 <= status < 300 else None
    if code is None:
        return Verdict(response_type == COMPLETED, DecidedBy.RESPONSE_TYPE)
    if code != "0":
        return Verdict(False, DecidedBy.VALIDATION, code)
    third_party = _text(answer.get("ThirdPartyTransID") if answer is not None else None)
    return Verdict(True, DecidedBy.VALIDATION, code, third_party or "")


def mask_msisdn(msisdn: str) -> str:
    """The v2 mask: ``254712345126`` becomes ``2547 ***** 126``."""
    return f"{msisdn[:4]} ***** {msisdn[-3:]}"


def shillings(amount: int) -> str:
    return f"{amount}.00"


def validation_payload(payment: C2BPayment) -> dict[str, str]:
    """What the ValidationURL receives: no balance yet, and no ThirdPartyTransID to echo."""
    return _transaction_payload(payment, org_account_balance="", third_party_trans_id="")


def confirmation_payload(payment: C2BPayment) -> dict[str, str]:
    return _transaction_payload(
        payment,
        org_account_balance=payment.org_account_balance,
        third_party_trans_id=payment.third_party_trans_id,
    )


def registered_body(originator_conversation_id: str) -> dict[str, str]:
    # "Coversation" is Safaricom's spelling; clients read this exact key.
    return {
        "OriginatorCoversationID": originator_conversation_id,
        "ResponseCode": "0",
        "ResponseDescription": REGISTERED,
    }


def simulate_accepted_body(originator_conversation_id: str) -> dict[str, str]:
    return {
        "OriginatorCoversationID": originator_conversation_id,
        "ResponseCode": "0",
        "ResponseDescription": SIMULATE_ACCEPTED,
    }


def _transaction_payload(
    payment: C2BPayment, *, org_account_balance: str, third_party_trans_id: str
) -> dict[str, str]:
    request = payment.request
    return {
        "TransactionType": _TRANSACTION_TYPES.get(request.command_id, PAY_BILL_TYPE),
        "TransID": payment.trans_id,
        "TransTime": payment.trans_time,
        "TransAmount": shillings(request.amount),
        "BusinessShortCode": request.short_code,
        "BillRefNumber": request.bill_ref_number,
        "InvoiceNumber": "",
        "OrgAccountBalance": org_account_balance,
        "ThirdPartyTransID": third_party_trans_id,
        "MSISDN": mask_msisdn(request.msisdn),
        "FirstName": payment.first_name,
        "MiddleName": "",
        "LastName": "",
    }


def _result_code(answer: Mapping[str, Any] | None) -> str | None:
    code = _text(answer.get("ResultCode") if answer is not None else None)
    return code if code else None


def _text(value: object) -> str | None:
    """A JSON string or integer as text; None for anything else.

    bool is an int in Python but not a number in JSON: ``true`` is not a ResultCode.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)
