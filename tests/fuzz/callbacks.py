"""The Daraja webhooks as fuzz targets: the STK callback and C2B, their real shapes
(daraja.md §3 and §8, ``tests.c2b_support``'s exact confirmation body), what the contract
says must be refused or accepted, and strategies for whole requests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from hypothesis import strategies as st

from tests.c2b_support import confirmation_body
from tests.fuzz.documents import (
    NOT_JSON,
    Body,
    Must,
    Raw,
    bodies,
    contains,
    nonfinite,
    sample,
    too_big_to_read,
)
from tests.fuzz.example import (
    Credential,
    Example,
    Route,
    Undecided,
    blank,
    decided,
    flipped,
    request_around,
    wrong_secret,
)
from tests.fuzz.wire import FRAMINGS, KEPT_BYTES, Framing

# --- the STK callback ------------------------------------------------------------------------


def stk_success(checkout_id: str, receipt: str, amount: Any, balance: bool) -> dict[str, Any]:
    """daraja.md §3.1, with the optional Balance item that has no Value (§3.3)."""
    items: list[dict[str, Any]] = [
        {"Name": "Amount", "Value": amount},
        {"Name": "MpesaReceiptNumber", "Value": receipt},
        {"Name": "TransactionDate", "Value": 20191219102115},
        {"Name": "PhoneNumber", "Value": 254708374149},
    ]
    if balance:
        items.insert(2, {"Name": "Balance"})
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "29115-34620561-1",
                "CheckoutRequestID": checkout_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {"Item": items},
            }
        }
    }


def stk_failure(checkout_id: str, code: tuple[int | str, str]) -> dict[str, Any]:
    """daraja.md §3.2: no CallbackMetadata at all; ResultCode may be a string (§3.3)."""
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "f1e2-4b95-a71d-b30d3cdbb7a7942864",
                "CheckoutRequestID": checkout_id,
                "ResultCode": code[0],
                "ResultDesc": code[1],
            }
        }
    }


FAILURE_CODES = (
    (1032, "Request cancelled by user"),
    (1037, "DS timeout user cannot be reached"),
    (1, "The balance is insufficient for the transaction."),
    ("SFC_IC0003", "Operator does not exist"),
)
UNKNOWN_IDS = st.from_regex(r"ws_CO_[0-9]{14,30}", fullmatch=True)
RECEIPTS = st.from_regex(r"[A-Z0-9]{10}", fullmatch=True)
AMOUNTS = st.sampled_from((Raw("1.00"), 1, Raw("350.00"), 350, 10_000_000, Raw("270.50")))


def stk_shapes(checkout_ids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(stk_success, checkout_ids, RECEIPTS, AMOUNTS, st.booleans()),
        st.builds(stk_failure, checkout_ids, sample(FAILURE_CODES)),
    )


def stk_must(body: Body) -> Must:
    """Refused for sure: not JSON (NaN is not JSON), not the envelope, no CheckoutRequestID
    or ResultCode, a success without a receipt or an amount (daraja.md §3)."""
    doc = body.doc
    if doc is NOT_JSON:
        return "either"
    if contains(doc, nonfinite):
        return "refuse"
    if contains(doc, too_big_to_read):
        return "either"
    try:
        callback = decided(doc.get("Body")) if isinstance(doc, dict) else None
        stk = decided(callback.get("stkCallback")) if isinstance(callback, dict) else None
        if not isinstance(stk, dict):
            return "refuse"
        checkout_id = decided(stk.get("CheckoutRequestID"))
        if not isinstance(checkout_id, str) or not checkout_id.strip():
            return "refuse"
        if "ResultCode" not in stk:
            return "refuse"
        code = decided(stk["ResultCode"])
        if (type(code) is int and code == 0) or code == "0":
            metadata = decided(stk.get("CallbackMetadata"))
            items = decided(metadata.get("Item")) if isinstance(metadata, dict) else None
            if not isinstance(items, list):
                return "refuse"
            receipt = _item_values(items, "MpesaReceiptNumber")
            if not any(isinstance(v, str) and v.strip() for v in receipt):
                return "refuse"
            if all(v is None for v in _item_values(items, "Amount")):
                return "refuse"
    except Undecided:
        return "either"
    return "accept" if body.pristine else "either"


def _item_values(items: list[Any], name: str) -> list[Any]:
    return [
        decided(item["Value"])
        for item in items
        if isinstance(item, dict) and item.get("Name") == name and "Value" in item
    ]


@dataclass(frozen=True, slots=True)
class StkTargets:
    """Where callbacks go: the configured URL, and the seeded attempt's own URL (the one its
    push gave Daraja), with that attempt's CheckoutRequestID."""

    base: str
    attempt: str
    attempt_checkout_id: str


@st.composite
def stk_examples(
    draw: st.DrawFn, targets: StkTargets, framings: st.SearchStrategy[Framing] = FRAMINGS
) -> Example:
    where = draw(st.sampled_from(("base",) * 6 + ("attempt",) * 3 + ("stranger", "wrong")))
    known = draw(st.integers(0, 9)) < (7 if where == "attempt" else 1)
    checkout_ids = st.just(targets.attempt_checkout_id) if known else UNKNOWN_IDS
    body = draw(bodies(stk_shapes(checkout_ids)))
    credential: Credential = "right"
    target = targets.base if where == "base" else targets.attempt
    if where == "stranger":
        credential, target = "stranger", wrong_secret(draw, targets.base)
    elif where == "wrong":
        head, _, token = targets.attempt.rpartition("/")
        credential, target = "wrong", f"{head}/{flipped(draw, token)}"
    sent = request_around(draw, target, [], body, framings)
    must = stk_must(body) if credential == "right" else "either"
    # Sure to be accepted: an unknown id at the configured URL (kept as an orphan). At the
    # attempt's own URL the outcome depends on what earlier examples did to the attempt.
    orphan = where == "base" and not known
    if must == "accept" and not (sent.plain and len(body.data) <= KEPT_BYTES and orphan):
        must = "either"
    return Example("stk", target, sent.wire, body, credential, must, sent.lying_encoding)


# --- C2B ---------------------------------------------------------------------------------------


TRANS_IDS = st.from_regex(r"[A-Z0-9]{10}", fullmatch=True)


def c2b_shapes(order_reference: str, order_total: int) -> st.SearchStrategy[dict[str, Any]]:
    accounts = st.sampled_from((order_reference, order_reference.lower(), "DK-YYYYYY", ""))
    amounts = st.sampled_from((f"{order_total}.00", str(order_total), "5.00", "10000000"))
    return st.builds(confirmation_body, TRANS_IDS, accounts, amounts)


def c2b_must(body: Body) -> Must:
    """Refused for sure: not JSON, not an object, no usable TransID, no amount, an amount
    outside KES 1 to 10,000,000 (daraja.md §8: every field is a string)."""
    doc = body.doc
    if doc is NOT_JSON:
        return "either"
    if contains(doc, nonfinite):
        return "refuse"
    if contains(doc, too_big_to_read):
        return "either"
    if not isinstance(doc, dict):
        return "refuse"
    try:
        trans_id, amount = decided(doc.get("TransID")), decided(doc.get("TransAmount"))
        if blank(trans_id) or isinstance(trans_id, bool | dict | list):
            return "refuse"
        # Normalised as Daraja's ids are: spaces trimmed, upper case.
        if isinstance(trans_id, str) and not re.fullmatch(
            r"[A-Z0-9]{6,32}", trans_id.strip().upper()
        ):
            return "refuse"
        if blank(amount) or isinstance(amount, bool | dict | list):
            return "refuse"
        if isinstance(amount, str) and not _plausible_amount(amount):
            return "refuse"
    except Undecided:
        return "either"
    return "accept" if body.pristine else "either"


def _plausible_amount(text: str) -> bool:
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        return False
    return amount.is_finite() and 1 <= amount <= 10_000_000


@st.composite
def c2b_examples(
    draw: st.DrawFn,
    confirmation: str,
    validation: str,
    shapes: st.SearchStrategy[dict[str, Any]],
    framings: st.SearchStrategy[Framing] = FRAMINGS,
) -> Example:
    route: Route = draw(st.sampled_from(("c2b", "c2b", "c2b-validation")))
    path = confirmation if route == "c2b" else validation
    body = draw(bodies(shapes))
    # One in five: Hypothesis does not draw uniformly, and one in ten let a whole run of
    # 100 examples go by without a single stranger.
    credential: Credential = draw(st.sampled_from(("right",) * 4 + ("stranger",)))
    target = path
    if credential == "stranger":
        suffix = "" if route == "c2b" else "/validate"
        target = wrong_secret(draw, confirmation) + suffix
    sent = request_around(draw, target, [], body, framings)
    must = c2b_must(body) if credential == "right" else "either"
    # Validation accepts only a payment of an order awaiting exactly that amount.
    sure = sent.plain and len(body.data) <= KEPT_BYTES and route == "c2b"
    if must == "accept" and not sure:
        must = "either"
    return Example(route, target, sent.wire, body, credential, must, sent.lying_encoding)
