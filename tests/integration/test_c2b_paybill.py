"""Paybill payments (C2B) through the real server and the embedded simulator, over HTTP, on
SQLite and PostgreSQL: validation, confirmation, duplicates, unmatched money, bad bodies.

The embedded simulator validates every payment (its ``c2b_validation_active`` cannot be
switched from Duka's config), so the confirmations that validation would have stopped are
POSTed by hand, in Daraja's exact shape, as Daraja does when validation is not active.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import DATABASE, PAYMENTS, RECONCILER
from bot.config import AppConfig, ConfigError
from payments import ledger
from payments.http_body import MAX_CALLBACK_BYTES
from payments.simulator import C2BStatus, DecidedBy, rules
from storage.orders import OrderRecord
from tests.c2b_support import (
    ACCEPTED,
    C2B_SECRET,
    SHOWN_PHONE,
    SUCCESS,
    PaybillDuka,
    c2b_url,
    confirmation_body,
    post_json,
    post_raw,
    start_paybill_duka,
    unmatched_rows,
)
from tests.conftest import make_config, start_duka
from tests.helpers import (
    attempt_url,
    event_rows,
    make_order,
    order_status,
    outbox_rows,
    payment_rows,
)
from tests.integration.test_callback_webhook import post, success_body

PHONE = "254712345126"
UNKNOWN_ACCOUNT = "DK-YYYYYY"  # a well-formed reference that names no order
OTHER_SECRET = "7e57" + "0a1b2c3d4e5f6789" * 2  # a second hex secret, for validation


@pytest.fixture
async def paybill(database_url: str, tmp_path: Path) -> AsyncIterator[PaybillDuka]:
    """Duka with MPESA_C2B_CONFIRMATION_URL set, on SQLite and on PostgreSQL."""
    running = await start_paybill_duka(database_url, tmp_path)
    try:
        yield running
    finally:
        await running.runner.cleanup()


def kinds(rows: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return sorted((row["audience"], row["kind"]) for row in rows)


async def assert_untouched(engine: AsyncEngine, order: OrderRecord) -> None:
    """No money recorded anywhere, no message queued, the order still awaiting payment."""
    assert await payment_rows(engine, order.id) == []
    assert await unmatched_rows(engine) == []
    assert await outbox_rows(engine) == []
    assert await order_status(engine, order.id) == "awaiting_payment"


# --- start-up ---------------------------------------------------------------------------------


async def test_start_up_registers_the_c2b_urls_with_the_embedded_simulator(
    paybill: PaybillDuka,
) -> None:
    """Our URLs (validation = confirmation + /validate) are registered, ResponseType Completed."""
    registration = paybill.duka.simulator.c2b_registration
    assert registration is not None
    assert registration.confirmation_url == paybill.confirmation_url
    assert registration.validation_url == paybill.confirmation_url + "/validate"
    assert registration.response_type == "Completed"
    assert paybill.duka.config.daraja.paybill_fallback == "174379"


# --- the order is paid ------------------------------------------------------------------------


async def test_paybill_payment_of_the_exact_total_pays_the_order(paybill: PaybillDuka) -> None:
    """Validated, confirmed, paid through the ledger: one payment, one message each."""
    order = await make_order(paybill.engine)
    paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    assert (paid.status, paid.decided_by, paid.result_code) == (
        C2BStatus.COMPLETED,
        DecidedBy.VALIDATION,
        "0",
    )
    [validation] = paybill.duka.simulator.c2b_validations_sent
    assert (validation.status, validation.answer) == (200, ACCEPTED)
    [confirmation] = paybill.duka.simulator.c2b_confirmations_sent
    assert confirmation.status == 200

    assert await order_status(paybill.engine, order.id) == "paid"
    [payment] = await payment_rows(paybill.engine, order.id)
    assert payment.status == "paid"
    assert payment.settled_by == "c2b"
    assert payment.mpesa_receipt == paid.trans_id
    assert payment.paid_amount == order.total
    messages = await outbox_rows(paybill.engine, order.id)
    assert kinds(messages) == [("customer", "payment_paid"), ("merchant", "order_paid")]
    assert all(m["payload"]["receipt"] == paid.trans_id for m in messages)
    [event] = await event_rows(paybill.engine, "c2b")
    assert (event.status, event.payment_id) == ("applied", payment.id)
    assert json.loads(event.raw)["TransID"] == paid.trans_id  # kept raw, for audit
    assert await unmatched_rows(paybill.engine) == []


@pytest.mark.parametrize(
    "typed",
    [
        lambda ref: ref.lower().replace("-", " "),  # "dk 7kx3m9"
        lambda ref: f" {ref.lower()} ",
        lambda ref: ref.replace("-", ""),  # "DK7KX3M9"
    ],
    ids=["lower-case-with-space", "padded-lower-case", "no-dash"],
)
async def test_account_typed_loosely_still_matches_the_order(
    paybill: PaybillDuka, typed: Any
) -> None:
    """Customers type the reference however they like; case and spaces do not matter."""
    order = await make_order(paybill.engine)
    account = typed(order.reference)
    paid = await paybill.duka.simulator.pay_bill(PHONE, account, order.total)
    assert paid.status is C2BStatus.COMPLETED
    assert await order_status(paybill.engine, order.id) == "paid"
    [payment] = await payment_rows(paybill.engine, order.id)
    assert payment.mpesa_receipt == paid.trans_id


# --- duplicates -------------------------------------------------------------------------------


async def test_duplicated_confirmation_pays_once_and_both_are_acknowledged(
    paybill: PaybillDuka,
) -> None:
    """Daraja posts the same TransID twice: one payment, one message each, two 200s."""
    order = await make_order(paybill.engine)
    paybill.duka.simulator.duplicate_next_c2b_confirmation()
    paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    sent = await paybill.duka.simulator.wait_for_c2b_confirmations(2)
    assert [s.status for s in sent] == [200, 200]
    assert sent[0].body == sent[1].body

    [payment] = await payment_rows(paybill.engine, order.id)
    assert payment.mpesa_receipt == paid.trans_id
    messages = await outbox_rows(paybill.engine, order.id)
    assert kinds(messages) == [("customer", "payment_paid"), ("merchant", "order_paid")]
    assert [e.status for e in await event_rows(paybill.engine, "c2b")] == ["applied", "duplicate"]
    assert await unmatched_rows(paybill.engine) == []


async def test_same_confirmation_posted_again_by_hand_changes_nothing(
    paybill: PaybillDuka,
) -> None:
    """A replay of the body Daraja sent is answered Success and stored as a duplicate."""
    order = await make_order(paybill.engine)
    paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    [sent] = paybill.duka.simulator.c2b_confirmations_sent

    again = await post_json(paybill.confirmation_url, sent.body)
    assert again.status_code == 200
    assert again.json() == SUCCESS

    [payment] = await payment_rows(paybill.engine, order.id)
    assert payment.mpesa_receipt == paid.trans_id
    assert len(await outbox_rows(paybill.engine, order.id)) == 2
    events = await event_rows(paybill.engine, "c2b")
    assert [e.status for e in events] == ["applied", "duplicate"]
    assert paid.trans_id in events[1].note
    assert await order_status(paybill.engine, order.id) == "paid"


async def test_first_confirmation_by_hand_is_answered_in_darajas_format(
    paybill: PaybillDuka,
) -> None:
    """The ack is exactly {"ResultCode": 0, "ResultDesc": "Success"}, ResultCode a number."""
    order = await make_order(paybill.engine)
    body = confirmation_body("RKL51ZDR4F", order.reference, f"{order.total}.00")
    first = await post_json(paybill.confirmation_url, body)
    second = await post_json(paybill.confirmation_url, body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.text.replace(" ", "") == '{"ResultCode":0,"ResultDesc":"Success"}'
    assert second.json() == SUCCESS
    assert await order_status(paybill.engine, order.id) == "paid"
    assert [p.mpesa_receipt for p in await payment_rows(paybill.engine, order.id)] == ["RKL51ZDR4F"]
    assert [e.status for e in await event_rows(paybill.engine, "c2b")] == ["applied", "duplicate"]


# --- unknown account --------------------------------------------------------------------------


async def test_unknown_account_is_refused_at_validation_and_no_money_moves(
    paybill: PaybillDuka,
) -> None:
    """The validation answer is C2B00012; the simulator sends no confirmation."""
    order = await make_order(paybill.engine)
    refused = await paybill.duka.simulator.pay_bill(PHONE, UNKNOWN_ACCOUNT, order.total)
    assert refused.rejected
    assert (refused.decided_by, refused.result_code) == (DecidedBy.VALIDATION, "C2B00012")
    [validation] = paybill.duka.simulator.c2b_validations_sent
    assert validation.answer is not None
    assert validation.answer["ResultCode"] == "C2B00012"
    assert paybill.duka.simulator.c2b_confirmations_sent == []
    assert await event_rows(paybill.engine) == []
    await assert_untouched(paybill.engine, order)


async def test_unknown_account_confirmation_becomes_unmatched_money(
    paybill: PaybillDuka,
) -> None:
    """Validation off (Daraja's default): the money is kept as unmatched, merchant told."""
    order = await make_order(paybill.engine)
    body = confirmation_body("RKL51ZDR4F", "dk yyyyyy", "350.00")
    response = await post_json(paybill.confirmation_url, body)
    assert response.status_code == 200
    assert response.json() == SUCCESS

    [unmatched] = await unmatched_rows(paybill.engine)
    assert (unmatched.source, unmatched.reason, unmatched.status) == (
        "c2b",
        "unknown_account",
        "open",
    )
    assert (unmatched.receipt, unmatched.amount, unmatched.amount_exact) == (
        "RKL51ZDR4F",
        350,
        "350.00",
    )
    assert (unmatched.account, unmatched.masked_phone) == ("dk yyyyyy", SHOWN_PHONE)
    assert unmatched.msisdn is None
    assert unmatched.order_id is None
    assert json.loads(unmatched.raw) == body
    [alert] = await outbox_rows(paybill.engine)
    assert (alert["audience"], alert["kind"]) == ("merchant", "unmatched_payment")
    assert alert["payload"]["receipt"] == "RKL51ZDR4F"
    assert alert["payload"]["reason"] == "unknown_account"
    assert alert["payload"]["unmatched_id"] == unmatched.id
    [event] = await event_rows(paybill.engine, "c2b")
    assert (event.status, event.payment_id) == ("unmatched", None)
    assert await payment_rows(paybill.engine, order.id) == []
    assert await order_status(paybill.engine, order.id) == "awaiting_payment"


async def test_unmatched_confirmation_sent_twice_is_recorded_once(paybill: PaybillDuka) -> None:
    """One unmatched row and one merchant alert for one TransID; the second is a duplicate."""
    body = confirmation_body("RKL51ZDR4F", UNKNOWN_ACCOUNT, "120.00")
    for _ in range(2):
        response = await post_json(paybill.confirmation_url, body)
        assert (response.status_code, response.json()) == (200, SUCCESS)
    assert len(await unmatched_rows(paybill.engine)) == 1
    assert len(await outbox_rows(paybill.engine)) == 1
    assert [e.status for e in await event_rows(paybill.engine, "c2b")] == [
        "unmatched",
        "duplicate",
    ]


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"MSISDN": hashlib.sha256(PHONE.encode()).hexdigest()}, "v1 SHA-256 MSISDN"),
        ({"TransAmount": "120.000000000000000000000"}, "long amount text"),
    ],
    ids=["hashed-msisdn", "long-amount-text"],
)
async def test_unmatched_money_the_parser_accepts_is_always_stored(
    paybill: PaybillDuka, changes: dict[str, str], what: str
) -> None:
    """Fields parse_c2b accepts (a v1 SHA-256 MSISDN, a long amount) fit the unmatched row."""
    # parse_c2b takes an MSISDN of up to 64 characters (C2B v1 sends a SHA-256 hash,
    # daraja.md §8) and a TransAmount of up to 32; a storage error would lose the money.
    body = {**confirmation_body("RKL51ZDR4G", UNKNOWN_ACCOUNT, "120.00"), **changes}
    response = await post_json(paybill.confirmation_url, body)
    assert response.status_code == 200, f"{what}: {response.text}"
    assert response.json() == SUCCESS
    [unmatched] = await unmatched_rows(paybill.engine)
    assert (unmatched.reason, unmatched.amount) == ("unknown_account", 120)
    [event] = await event_rows(paybill.engine, "c2b")
    assert event.status == "unmatched"
    [alert] = await outbox_rows(paybill.engine)
    assert alert["kind"] == "unmatched_payment"


# --- wrong amount -----------------------------------------------------------------------------


async def test_wrong_amount_is_refused_at_validation(paybill: PaybillDuka) -> None:
    """C2B00013: the customer is told by M-Pesa at once, and nothing is paid."""
    order = await make_order(paybill.engine)
    refused = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total - 50)
    assert refused.rejected
    assert refused.result_code == "C2B00013"
    assert paybill.duka.simulator.c2b_confirmations_sent == []
    await assert_untouched(paybill.engine, order)


@pytest.mark.parametrize("amount", ["300.00", "400.00", "350.50"])
async def test_wrong_amount_confirmation_becomes_unmatched_and_order_stays_unpaid(
    paybill: PaybillDuka, amount: str
) -> None:
    """Less, more, or the total plus cents: unmatched (wrong_amount), never paid."""
    order = await make_order(paybill.engine)  # total 350
    body = confirmation_body("RKL51ZDR4F", order.reference, amount)
    response = await post_json(paybill.confirmation_url, body)
    assert (response.status_code, response.json()) == (200, SUCCESS)

    [unmatched] = await unmatched_rows(paybill.engine)
    assert (unmatched.reason, unmatched.status, unmatched.amount_exact) == (
        "wrong_amount",
        "open",
        amount,
    )
    assert unmatched.account == order.reference
    assert await order_status(paybill.engine, order.id) == "awaiting_payment"
    assert await payment_rows(paybill.engine, order.id) == []
    [alert] = await outbox_rows(paybill.engine)
    assert (alert["kind"], alert["payload"]["reason"]) == ("unmatched_payment", "wrong_amount")


# --- an order that is no longer payable -------------------------------------------------------


async def test_paybill_payment_for_a_paid_order_becomes_unmatched(paybill: PaybillDuka) -> None:
    """A new TransID for a paid order: validation refuses it, a confirmation is unmatched."""
    order = await make_order(paybill.engine)
    first = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    assert first.status is C2BStatus.COMPLETED

    refused = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    assert (refused.rejected, refused.result_code) == (True, "C2B00012")

    body = confirmation_body("RKL51ZDR4H", order.reference, f"{order.total}.00")
    response = await post_json(paybill.confirmation_url, body)
    assert (response.status_code, response.json()) == (200, SUCCESS)
    [unmatched] = await unmatched_rows(paybill.engine)
    assert (unmatched.reason, unmatched.receipt) == ("order_not_payable", "RKL51ZDR4H")
    [payment] = await payment_rows(paybill.engine, order.id)
    assert payment.mpesa_receipt == first.trans_id
    assert await order_status(paybill.engine, order.id) == "paid"
    assert kinds(await outbox_rows(paybill.engine, order.id)) == [
        ("customer", "payment_paid"),
        ("merchant", "order_paid"),
    ]
    [alert] = [m for m in await outbox_rows(paybill.engine) if m["kind"] == "unmatched_payment"]
    assert alert["payload"]["reason"] == "order_not_payable"


async def test_paybill_payment_for_a_cancelled_order_becomes_unmatched(
    paybill: PaybillDuka,
) -> None:
    """The order stays cancelled: money for it is the merchant's to refund or attach."""
    order = await make_order(paybill.engine)
    database = paybill.duka.app[DATABASE]
    assert await database.transaction(ledger.cancel_order, order.id, datetime.now(UTC))
    refused = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    assert (refused.rejected, refused.result_code) == (True, "C2B00012")

    body = confirmation_body("RKL51ZDR4J", order.reference, f"{order.total}.00")
    response = await post_json(paybill.confirmation_url, body)
    assert (response.status_code, response.json()) == (200, SUCCESS)
    [unmatched] = await unmatched_rows(paybill.engine)
    assert (unmatched.reason, unmatched.status) == ("order_not_payable", "open")
    assert await order_status(paybill.engine, order.id) == "cancelled"
    assert await payment_rows(paybill.engine, order.id) == []
    assert [m["kind"] for m in await outbox_rows(paybill.engine)] == ["unmatched_payment"]


# --- bad bodies and wrong secrets -------------------------------------------------------------


def _body_with(reference: str, **changes: Any) -> bytes:
    body: dict[str, Any] = confirmation_body("RKL51ZDR4F", reference, "350.00")
    for key, value in changes.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("make_body", "reason"),
    [
        (lambda ref: b"{not json", "not valid JSON"),
        (lambda ref: b"\xff\xfe garbage", "not valid JSON"),
        (lambda ref: b"[]", "top level is not an object"),
        (lambda ref: _body_with(ref, TransAmount="1e30"), "not between 1 and 10,000,000"),
        (lambda ref: _body_with(ref, TransAmount="NaN"), "not a finite number"),
        (lambda ref: _body_with(ref, TransAmount="-350.00"), "not between 1 and 10,000,000"),
        (lambda ref: _body_with(ref, TransAmount="350.001"), "more than two decimals"),
        (lambda ref: _body_with(ref, TransAmount=""), "TransAmount is missing or empty"),
        (
            lambda ref: _body_with(ref).replace(b'"350.00"', b"NaN"),
            "NaN is not a value Daraja sends",
        ),
        (lambda ref: _body_with(ref, TransID=None), "TransID is missing or empty"),
        (lambda ref: _body_with(ref, TransID="RKL-51Z"), "not an M-Pesa transaction id"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "array",
        "amount-1e30",
        "amount-NaN-text",
        "amount-negative",
        "amount-three-decimals",
        "amount-empty",
        "amount-NaN-literal",
        "no-TransID",
        "TransID-with-dash",
    ],
)
async def test_malformed_confirmation_gets_400_with_the_reason_and_is_kept(
    paybill: PaybillDuka, make_body: Any, reason: str
) -> None:
    """Refused with the reason, stored raw as a rejected c2b event, nothing else changes."""
    order = await make_order(paybill.engine)
    body = make_body(order.reference)
    response = await post_raw(paybill.confirmation_url, body)
    assert response.status_code == 400
    assert reason in response.json()["ResultDesc"]
    [event] = await event_rows(paybill.engine)
    assert (event.source, event.status) == ("c2b", "rejected")
    assert reason in event.note
    assert event.raw  # kept for audit, even when it is garbage
    await assert_untouched(paybill.engine, order)


async def test_oversized_confirmation_gets_413_and_a_truncated_copy_is_kept(
    paybill: PaybillDuka,
) -> None:
    """Over 64 KiB: 413 with the reason, the first 64 KiB kept as a rejected event."""
    order = await make_order(paybill.engine)
    padding = " " * (MAX_CALLBACK_BYTES + 10)
    body = json.dumps(confirmation_body("RKL51ZDR4F", order.reference, "350.00"))
    response = await post_raw(paybill.confirmation_url, (body[:-1] + padding + "}").encode())
    assert response.status_code == 413
    assert "larger than" in response.json()["ResultDesc"]
    [event] = await event_rows(paybill.engine)
    assert (event.source, event.status) == ("c2b", "rejected")
    assert len(event.raw) == MAX_CALLBACK_BYTES
    await assert_untouched(paybill.engine, order)


async def test_wrong_secret_is_a_plain_404_and_stores_nothing(paybill: PaybillDuka) -> None:
    """On the confirmation and the validation URL alike; a good body changes nothing."""
    order = await make_order(paybill.engine)
    good = json.dumps(
        confirmation_body("RKL51ZDR4F", order.reference, f"{order.total}.00")
    ).encode()
    forged = "f" * len(C2B_SECRET)
    for url in (paybill.confirmation_url, paybill.validation_url):
        wrong = url.replace(C2B_SECRET, forged)
        assert wrong != url
        assert (await post_raw(wrong, good)).status_code == 404
    shorter = paybill.confirmation_url.replace(C2B_SECRET, C2B_SECRET[:-1])
    assert (await post_raw(shorter, good)).status_code == 404
    assert await event_rows(paybill.engine) == []
    await assert_untouched(paybill.engine, order)


async def test_validation_by_hand_answers_in_darajas_format(paybill: PaybillDuka) -> None:
    """Accept "0" for the exact total; C2B00012, C2B00013 and C2B00016 otherwise; no writes."""
    order = await make_order(paybill.engine)
    total = f"{order.total}.00"
    cases = [
        (confirmation_body("RKL51ZDR4F", order.reference, total, balance=""), "0"),
        (confirmation_body("RKL51ZDR4F", UNKNOWN_ACCOUNT, total, balance=""), "C2B00012"),
        (confirmation_body("RKL51ZDR4F", order.reference, "1.00", balance=""), "C2B00013"),
        ({"TransAmount": total}, "C2B00016"),
    ]
    for body, code in cases:
        response = await post_json(paybill.validation_url, body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["ResultCode"] == code, body
        assert isinstance(answer["ResultDesc"], str)
    assert await event_rows(paybill.engine) == []
    await assert_untouched(paybill.engine, order)


# --- a validation URL of its own --------------------------------------------------------------


async def _start_with_validation_url(
    database_url: str, tmp_path: Path, sock: socket.socket, validation_path: str
) -> PaybillDuka:
    port = sock.getsockname()[1]
    config = make_config(
        database_url,
        port,
        tmp_path,
        MPESA_C2B_CONFIRMATION_URL=c2b_url(port),
        MPESA_C2B_VALIDATION_URL=f"http://127.0.0.1:{port}{validation_path}",
    )
    duka, runner = await start_duka(config, sock)
    return PaybillDuka(duka, runner)


async def test_a_validation_url_on_its_own_path_is_registered_and_served(
    database_url: str, tmp_path: Path, free_socket: socket.socket
) -> None:
    """MPESA_C2B_VALIDATION_URL with its own path and secret: Daraja asks there."""
    paybill = await _start_with_validation_url(
        database_url, tmp_path, free_socket, f"/hooks/c2b-check/{OTHER_SECRET}"
    )
    try:
        registration = paybill.duka.simulator.c2b_registration
        assert registration is not None
        assert registration.validation_url == paybill.validation_url
        assert paybill.validation_url.endswith(f"/hooks/c2b-check/{OTHER_SECRET}")
        order = await make_order(paybill.engine)
        refused = await paybill.duka.simulator.pay_bill(PHONE, order.reference, 1)
        assert refused.result_code == "C2B00013"
        paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
        assert paid.result_code == "0"
        assert await order_status(paybill.engine, order.id) == "paid"
        # The default /validate suffix is not served when validation has its own URL.
        default = await post_json(paybill.confirmation_url + "/validate", {})
        assert default.status_code == 404
    finally:
        await paybill.runner.cleanup()


def _config_or_error(
    database_url: str, port: int, tmp_path: Path, **env: str
) -> AppConfig | ConfigError:
    try:
        return make_config(database_url, port, tmp_path, **env)
    except ConfigError as exc:
        return exc


async def test_a_validation_url_beside_the_confirmation_url_is_refused_or_served(
    database_url: str, tmp_path: Path, free_socket: socket.socket
) -> None:
    """Validation at /hooks/c2b/<other secret>: a ConfigError for the key, or both URLs work."""
    # Either answer is fine; a server that cannot start (or a validation URL that is never
    # served) is not.
    port = free_socket.getsockname()[1]
    config = _config_or_error(
        database_url,
        port,
        tmp_path,
        MPESA_C2B_CONFIRMATION_URL=c2b_url(port),
        MPESA_C2B_VALIDATION_URL=c2b_url(port, OTHER_SECRET),
    )
    if isinstance(config, ConfigError):
        assert config.key == "MPESA_C2B_VALIDATION_URL"
        return
    duka, runner = await start_duka(config, free_socket)
    paybill = PaybillDuka(duka, runner)
    try:
        order = await make_order(paybill.engine)
        body = confirmation_body("RKL51ZDR4F", order.reference, f"{order.total}.00", balance="")
        validation = await post_json(paybill.validation_url, body)
        assert (validation.status_code, validation.json()) == (200, ACCEPTED)
        paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
        assert paid.result_code == "0"
        assert await order_status(paybill.engine, order.id) == "paid"
    finally:
        await runner.cleanup()


# --- a Paybill payment while a push is still open ---------------------------------------------


async def test_push_left_open_after_a_paybill_payment_never_tells_the_customer_it_failed(
    database_url: str, tmp_path: Path
) -> None:
    """A Paybill payment while the push is open is that attempt's money: it pays the order
    once, and the push's end (here: never answered) tells nobody anything more."""
    ahead = [timedelta(0)]
    paybill = await start_paybill_duka(
        database_url, tmp_path, clock=lambda: datetime.now(UTC) + ahead[0]
    )
    try:
        order = await make_order(paybill.engine)
        paybill.duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
        await paybill.duka.app[PAYMENTS].start_payment(order.id, "0712345678")
        paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
        assert paid.status is C2BStatus.COMPLETED
        assert await order_status(paybill.engine, order.id) == "paid"
        [attempt] = await payment_rows(paybill.engine, order.id)
        assert (attempt.status, attempt.settled_by) == ("paid", "c2b")
        assert attempt.mpesa_receipt == paid.trans_id

        ahead[0] = timedelta(minutes=10)  # long past expire_after: the push is over
        await paybill.duka.app[RECONCILER].sweep()
        [attempt] = await payment_rows(paybill.engine, order.id)
        assert attempt.status == "paid"
        assert await order_status(paybill.engine, order.id) == "paid"
        assert kinds(await outbox_rows(paybill.engine, order.id)) == [
            ("customer", "payment_paid"),
            ("merchant", "order_paid"),
        ]
    finally:
        await paybill.runner.cleanup()


async def test_the_pushs_own_callback_after_a_paybill_payment_counts_its_money_once(
    paybill: PaybillDuka,
) -> None:
    """Safaricom's Paybill confirmation of an STK payment comes first, then the STK
    callback with the same receipt: one payment; a callback with another receipt is a
    second payment: unmatched money for the merchant, never lost, never a second "Paid!"."""
    order = await make_order(paybill.engine)
    paybill.duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await paybill.duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [push] = await payment_rows(paybill.engine, order.id)
    paid = await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    same = success_body(push.checkout_request_id, f"{order.total}.00", paid.trans_id)
    other = success_body(push.checkout_request_id, f"{order.total}.00", "QKX9OTHER1")
    own_url = attempt_url(paybill.duka.callback_url, push.id)
    for body in (same, other):
        assert (await post(paybill.duka, body, own_url)).status_code == 200
    [attempt] = await payment_rows(paybill.engine, order.id)
    assert (attempt.status, attempt.mpesa_receipt) == ("paid", paid.trans_id)
    callbacks = await event_rows(paybill.engine, "callback")
    assert [e.status for e in callbacks] == ["duplicate", "unmatched"]
    [money] = await unmatched_rows(paybill.engine)
    assert (money.receipt, money.reason) == ("QKX9OTHER1", "second_payment")
    assert kinds(await outbox_rows(paybill.engine, order.id)) == [
        ("customer", "payment_paid"),
        ("merchant", "order_paid"),
    ]


async def test_two_copies_arriving_at_once_pay_the_order_once(paybill: PaybillDuka) -> None:
    """Concurrent copies of one confirmation: one payment, one message each, all acknowledged."""
    order = await make_order(paybill.engine)
    body = confirmation_body("RKL51ZDR4F", order.reference, f"{order.total}.00")
    answers = await asyncio.gather(*(post_json(paybill.confirmation_url, body) for _ in range(4)))
    assert [(a.status_code, a.json()) for a in answers] == [(200, SUCCESS)] * 4
    [payment] = await payment_rows(paybill.engine, order.id)
    assert payment.mpesa_receipt == "RKL51ZDR4F"
    assert len(await outbox_rows(paybill.engine, order.id)) == 2
    statuses = sorted(e.status for e in await event_rows(paybill.engine, "c2b"))
    assert statuses == ["applied", "duplicate", "duplicate", "duplicate"]


async def test_unmatched_copies_arriving_at_once_are_recorded_once(paybill: PaybillDuka) -> None:
    """The same for money that matches no order: one unmatched row, one merchant alert."""
    body = confirmation_body("RKL51ZDR4F", UNKNOWN_ACCOUNT, "120.00")
    answers = await asyncio.gather(*(post_json(paybill.confirmation_url, body) for _ in range(4)))
    assert [(a.status_code, a.json()) for a in answers] == [(200, SUCCESS)] * 4
    assert len(await unmatched_rows(paybill.engine)) == 1
    assert len(await outbox_rows(paybill.engine)) == 1
    statuses = sorted(e.status for e in await event_rows(paybill.engine, "c2b"))
    assert statuses == ["duplicate", "duplicate", "duplicate", "unmatched"]


async def test_c2b_secret_never_reaches_the_logs(
    paybill: PaybillDuka, caplog: pytest.LogCaptureFixture
) -> None:
    """Access log, rejections and the simulator's deliveries all keep the secret out."""
    caplog.set_level(logging.DEBUG)
    order = await make_order(paybill.engine)
    await paybill.duka.simulator.pay_bill(PHONE, order.reference, order.total)
    await paybill.duka.simulator.pay_bill(PHONE, UNKNOWN_ACCOUNT, order.total)
    await post_raw(paybill.confirmation_url, b"{broken")
    await post_raw(paybill.validation_url, b"{broken")
    # httpx's records are this test's own client announcing the URL it calls.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any("/hooks/c2b/***" in message for message in ours)  # the access log ran
    assert all(C2B_SECRET not in message for message in ours)
