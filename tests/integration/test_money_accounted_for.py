"""Money that arrives by uncommon paths is never invisible, and nobody hears "failed" about
money that may have moved: each case over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, text, update

from bot.app import DATABASE, PAYMENTS, RECONCILER
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from payments import review
from payments.simulator import rules
from storage.schema import orders, payments, unmatched_payments
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.helpers import (
    attempt_url,
    event_rows,
    make_order,
    outbox_rows,
    payment_rows,
    wait_until,
)
from tests.integration.test_callback_webhook import post, success_body

PHONE = "0712345678"
SLOW_ANSWERS = TEST_TOML + "\n[mpesa]\nrequest_timeout_seconds = 0.3\n"


@pytest.fixture
async def duka_with_timeouts(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[RunningDuka]:
    """Duka whose Daraja requests time out after 0.3 s (so push answers can be lost)."""
    config = make_config(database_url, free_socket.getsockname()[1], tmp_path, toml=SLOW_ANSWERS)
    duka, runner = await start_duka(config, free_socket)
    try:
        yield duka
    finally:
        await runner.cleanup()


async def lost_push(duka: RunningDuka, chat_id: str) -> int:
    """An order whose push reached Daraja but whose answer was lost (attempt ``unknown``)."""
    order = await make_order(duka.engine, chat_id=chat_id)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    duka.simulator.fail_next_push(delay_seconds=1.0)
    started = await duka.app[PAYMENTS].start_payment(order.id, PHONE)
    assert started.status == "unknown"
    return order.id


async def unmatched_rows(duka: RunningDuka) -> list[Any]:
    async with duka.engine.connect() as conn:
        return list((await conn.execute(select(unmatched_payments))).all())


def kinds(messages: list[dict[str, Any]], order_id: int | None = None) -> list[str]:
    return sorted(m["kind"] for m in messages if order_id is None or m["order_id"] == order_id)


async def test_a_lost_pushs_callback_at_its_own_url_pays_it_without_guessing(
    duka_with_timeouts: RunningDuka,
) -> None:
    """Case 1 today: two lost pushes, same phone and amount; each push carried its own
    callback URL, so the paid callback names its attempt: that order is paid, the other
    attempt stays as it was (it ends unconfirmed later), nothing is guessed."""
    duka = duka_with_timeouts
    first, second = await lost_push(duka, "1"), await lost_push(duka, "2")
    [attempt] = await payment_rows(duka.engine, second)
    own_url = attempt_url(duka.callback_url, attempt.id)
    body = success_body("ws_CO_answer_never_seen", "350.00", "QKX0000010")
    assert (await post(duka, body, own_url)).status_code == 200
    assert [p.status for p in await payment_rows(duka.engine, second)] == ["paid"]
    assert [p.status for p in await payment_rows(duka.engine, first)] == ["unknown"]
    assert await unmatched_rows(duka) == []
    assert kinds(await outbox_rows(duka.engine)) == ["order_paid", "payment_paid"]


async def test_a_paid_callback_that_several_lost_pushes_fit_is_unmatched_money_at_once(
    duka_with_timeouts: RunningDuka,
) -> None:
    """Case 1 for pushes made before per-attempt URLs (their callbacks come to the bare
    URL): two lost pushes, same phone and amount, one paid callback: no guess, no loss."""
    duka = duka_with_timeouts
    first, second = await lost_push(duka, "1"), await lost_push(duka, "2")
    async with duka.engine.begin() as conn:  # set-up: as pushed by the previous version
        await conn.execute(update(payments).values(own_callback_url=False))
    answer = await post(duka, success_body("ws_CO_answer_never_seen", "350.00", "QKX0000001"))
    assert answer.status_code == 200

    [money] = await unmatched_rows(duka)
    assert (money.receipt, money.amount, money.status) == ("QKX0000001", 350, "open")
    assert (money.reason, money.masked_phone) == ("several_attempts_fit", "07XX XXX 678")
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "unmatched"
    assert kinds(await outbox_rows(duka.engine)) == ["unmatched_payment"]  # merchant, at once

    await asyncio.sleep(1.1)  # past expire_after: both attempts end without M-Pesa's word
    await duka.app[RECONCILER].sweep()
    messages = await outbox_rows(duka.engine)
    for order_id in (first, second):
        assert [p.status for p in await payment_rows(duka.engine, order_id)] == ["expired"]
        assert kinds(messages, order_id) == ["payment_check", "payment_unconfirmed"]
    assert "payment_failed" not in kinds(messages)
    # The merchant sees the unconfirmed attempts next to the money that may be theirs.
    found = await duka.app[DATABASE].transaction(review.review_list, datetime.now(UTC))
    assert [m.receipt for m in found.unmatched] == ["QKX0000001"]
    assert [a.same_money for a in found.unconfirmed] == [("QKX0000001",), ("QKX0000001",)]


async def test_a_paid_callback_an_hour_late_is_unmatched_after_the_grace(
    duka_with_timeouts: RunningDuka,
) -> None:
    """Case 1, late (a push made before per-attempt URLs): the only fitting push is older
    than the matching window."""
    duka = duka_with_timeouts
    order = await lost_push(duka, "1")
    async with duka.engine.begin() as conn:  # set-up: pushed two hours ago, by the old version
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        await conn.execute(
            update(payments)
            .where(payments.c.order_id == order)
            .values(created_at=two_hours_ago, own_callback_url=False)
        )
    await duka.app[RECONCILER].sweep()  # it expires, unconfirmed
    await post(duka, success_body("ws_CO_two_hours_late", "350.00", "QKX0000002"))
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "orphan"  # maybe its push answer is still on the way
    await duka.app[RECONCILER].sweep()
    assert await unmatched_rows(duka) == []  # not before the grace

    await asyncio.sleep(1.1)
    await duka.app[RECONCILER].sweep()
    [money] = await unmatched_rows(duka)
    assert (money.receipt, money.reason) == ("QKX0000002", "no_attempt")
    assert [e.status for e in await event_rows(duka.engine, "callback")] == ["unmatched"]
    assert kinds(await outbox_rows(duka.engine)) == [
        "payment_check",
        "payment_unconfirmed",
        "unmatched_payment",
    ]
    await duka.app[RECONCILER].sweep()  # read once: no second alert, no re-parse
    assert len(await outbox_rows(duka.engine)) == 3


async def test_a_paid_callback_without_a_phone_number_is_unmatched_after_the_grace(
    duka: RunningDuka,
) -> None:
    body = success_body("ws_CO_no_phone", "120.00", "QKX0000003")
    body = body.replace(b',{"Name":"PhoneNumber","Value":254712345678}', b"")
    assert (await post(duka, body)).status_code == 200
    await asyncio.sleep(1.1)
    await duka.app[RECONCILER].sweep()
    [money] = await unmatched_rows(duka)
    assert (money.reason, money.amount, money.masked_phone) == ("no_phone", 120, "***")


async def test_a_failed_orphan_is_set_aside_once_without_telling_anyone(duka: RunningDuka) -> None:
    body = (
        b'{"Body":{"stkCallback":{"MerchantRequestID":"1","CheckoutRequestID":"ws_CO_nobody",'
        b'"ResultCode":1032,"ResultDesc":"Request cancelled by user"}}}'
    )
    await post(duka, body)
    await asyncio.sleep(1.1)
    await duka.app[RECONCILER].sweep()
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "ignored"
    assert await unmatched_rows(duka) == []
    assert await outbox_rows(duka.engine) == []


@pytest.mark.parametrize("amount", ["1e30", "1e1000000", "10000000.01", "0.5", "270.001"])
async def test_an_absurd_callback_amount_is_refused_and_kept_raw(
    duka: RunningDuka, amount: str
) -> None:
    """Case 2: refused with 400 before any arithmetic; kept for audit; nothing changes."""
    answer = await post(duka, success_body("ws_CO_absurd", amount, "QKX0000004"))
    assert answer.status_code == 400
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "rejected"
    assert amount in event.raw
    assert await unmatched_rows(duka) == []


async def test_a_poison_orphan_does_not_stop_a_good_one_being_adopted(duka: RunningDuka) -> None:
    """Case 2: a stored event an older version let in beside a good orphan: one sweep
    sets the poison aside and adopts the good one."""
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, PHONE)
    [attempt] = await payment_rows(duka.engine, order.id)
    now = datetime.now(UTC)
    good = success_body(attempt.checkout_request_id, "350.00", "QKX0000005").decode()
    poison = success_body("ws_CO_poison", "1e30", "QKX0000006").decode()
    async with duka.engine.begin() as conn:  # set-up: events as an older version stored them
        for raw, checkout_id, status, attempt_id in (
            (good, attempt.checkout_request_id, "orphan", attempt.id),
            (poison, "ws_CO_poison", "received", None),  # newest: read first
        ):
            await conn.execute(
                text(
                    "INSERT INTO payment_events (source, received_at, raw, checkout_request_id,"
                    " status, note, attempt_id)"
                    " VALUES ('callback', :at, :raw, :cid, :status, '', :aid)"
                ),
                {"at": now, "raw": raw, "cid": checkout_id, "status": status, "aid": attempt_id},
            )
    report = await duka.app[RECONCILER].sweep()
    assert report.adopted == 1
    assert [p.status for p in await payment_rows(duka.engine, order.id)] == ["paid"]
    statuses = {e.checkout_request_id: e.status for e in await event_rows(duka.engine, "callback")}
    assert statuses == {attempt.checkout_request_id: "applied", "ws_CO_poison": "rejected"}


async def test_results_the_reconciler_applies_are_delivered_without_waiting_for_a_poll(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """Case 4: the dispatcher polls once a minute here; the sweep wakes it."""
    port = free_socket.getsockname()[1]
    config = make_config(database_url, port, tmp_path)
    terminal = TerminalChannel(lambda _: None)
    duka, runner = await start_duka(config, free_socket, terminal=terminal, dispatch_seconds=60)
    try:
        order = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(order.id, "0712000006")  # callback dropped
        await asyncio.sleep(0.3)
        report = await duka.app[RECONCILER].sweep()
        assert report.settled == 1
        await wait_until(
            lambda: any("New paid order" in t for t in terminal.messages.get(MERCHANT_CHAT, [])),
            timeout=3,
            what="the merchant's paid-order message",
        )
    finally:
        await runner.cleanup()


_FAIL_RECORDING = {
    "sqlite": [
        "CREATE TRIGGER fail_recording BEFORE UPDATE OF checkout_request_id ON payments"
        " WHEN NEW.checkout_request_id IS NOT NULL BEGIN SELECT RAISE(ABORT, 'injected'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_recording() RETURNS trigger AS $$ BEGIN"
        " RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_recording BEFORE UPDATE OF checkout_request_id ON payments"
        " FOR EACH ROW WHEN (NEW.checkout_request_id IS NOT NULL)"
        " EXECUTE FUNCTION fail_recording()",
    ],
}


async def test_a_push_answer_that_cannot_be_recorded_at_first_still_pays_the_order(
    duka: RunningDuka,
) -> None:
    """Case 5: the database refuses to store Daraja's answer for a while; the callback
    arrives meanwhile (an orphan); the answer is kept in memory, stored on a later try,
    and the waiting callback pays the order. Nobody hears "failed"."""
    dialect = duka.engine.dialect.name
    async with duka.engine.begin() as conn:
        for statement in _FAIL_RECORDING[dialect]:
            await conn.execute(text(statement))
    order = await make_order(duka.engine)
    paying = asyncio.create_task(duka.app[PAYMENTS].start_payment(order.id, PHONE))
    await duka.simulator.wait_for_callbacks(1)
    # Its URL names the attempt, but linking the id is refused too (same fault): kept.
    await wait_until(
        lambda: _has_event(duka, "received"), timeout=5, what="the callback stored, not applied"
    )
    async with duka.engine.begin() as conn:  # the fault passes
        await conn.execute(
            text(
                "DROP TRIGGER fail_recording" + (" ON payments" if dialect == "postgresql" else "")
            )
        )
    started = await asyncio.wait_for(paying, timeout=10)
    assert started.status == "pending"  # the customer is told to check their phone
    [attempt] = await payment_rows(duka.engine, order.id)
    assert attempt.status == "paid"
    assert kinds(await outbox_rows(duka.engine)) == ["order_paid", "payment_paid"]


async def _has_event(duka: RunningDuka, status: str) -> bool:
    return any(e.status == status for e in await event_rows(duka.engine, "callback"))


# --- a third-party Daraja test double whose query answers name a random transaction --------


@dataclass
class RandomIdDaraja:
    base_url: str
    queries: int = 0
    honest: bool = False  # from now on, answer about the transaction asked: paid


@pytest.fixture
async def random_id_daraja() -> AsyncIterator[RandomIdDaraja]:
    """Accepts pushes, never calls back, and answers every STK query with "paid" for a
    CheckoutRequestID of its own invention (like daraja-mock, daraja.md §11)."""
    ids = itertools.count(1)
    double = RandomIdDaraja("")

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "double-token", "expires_in": "3599"})

    async def push(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "MerchantRequestID": "1-1-1",
                "CheckoutRequestID": f"ws_CO_double_{next(ids)}",
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            }
        )

    async def query(request: web.Request) -> web.Response:
        double.queries += 1
        asked = (await request.json())["CheckoutRequestID"]
        return web.json_response(
            {
                "ResponseCode": "0",
                "ResponseDescription": "The service request has been accepted successsfully",
                "MerchantRequestID": "1-1-1",
                "CheckoutRequestID": asked if double.honest else f"ws_CO_{secrets.token_hex(8)}",
                "ResultCode": "0",
                "ResultDesc": "The service request is processed successfully.",
            }
        )

    app = web.Application()
    app.router.add_get("/oauth/v1/generate", token)
    app.router.add_post("/mpesa/stkpush/v1/processrequest", push)
    app.router.add_post("/mpesa/stkpushquery/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    double.base_url = f"http://127.0.0.1:{port}"
    try:
        yield double
    finally:
        await runner.cleanup()


class MovableClock:
    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def test_a_query_answer_about_another_transaction_is_a_failed_query(
    database_url: str,
    free_socket: socket.socket,
    tmp_path: Path,
    random_id_daraja: RandomIdDaraja,
) -> None:
    """Never an orphan, never "paid"; the attempt ends unconfirmed, and the customer is told."""
    port = free_socket.getsockname()[1]
    config = make_config(database_url, port, tmp_path, MPESA_BASE_URL=random_id_daraja.base_url)
    clock = MovableClock()
    duka, runner = await start_duka(config, free_socket, clock=clock)
    try:
        order = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(order.id, PHONE)

        async def asked_twice() -> bool:
            await duka.app[RECONCILER].sweep()
            await asyncio.sleep(0.1)
            return random_id_daraja.queries >= 2

        await wait_until(asked_twice, timeout=10, what="two STK queries")
        [attempt] = await payment_rows(duka.engine, order.id)
        assert attempt.status == "pending"
        assert not [e for e in await event_rows(duka.engine) if e.status == "orphan"]

        clock.ahead = timedelta(minutes=11)  # past the expiry and the retries that follow
        await duka.app[RECONCILER].sweep()
        [attempt] = await payment_rows(duka.engine, order.id)
        assert (attempt.status, attempt.result_code) == ("expired", "unconfirmed")
        assert kinds(await outbox_rows(duka.engine)) == ["payment_check", "payment_unconfirmed"]
    finally:
        await runner.cleanup()


async def test_an_unconfirmed_attempt_is_paid_when_daraja_answers_late(
    database_url: str,
    free_socket: socket.socket,
    tmp_path: Path,
    random_id_daraja: RandomIdDaraja,
) -> None:
    """Ten minutes without a usable answer: unconfirmed. Asked again later, Daraja says
    "paid": the order is paid and the customer told, without a second push."""
    port = free_socket.getsockname()[1]
    config = make_config(database_url, port, tmp_path, MPESA_BASE_URL=random_id_daraja.base_url)
    clock = MovableClock()
    duka, runner = await start_duka(config, free_socket, clock=clock)
    try:
        order = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(order.id, PHONE)
        clock.ahead = timedelta(minutes=11)
        await duka.app[RECONCILER].sweep()
        [attempt] = await payment_rows(duka.engine, order.id)
        assert (attempt.status, attempt.result_code) == ("expired", "unconfirmed")

        random_id_daraja.honest = True
        clock.ahead = timedelta(minutes=13)  # the next late question is due
        await duka.app[RECONCILER].sweep()
        [attempt] = await payment_rows(duka.engine, order.id)
        assert attempt.status == "paid"
        assert kinds(await outbox_rows(duka.engine)) == [
            "order_paid",
            "payment_check",
            "payment_paid",
            "payment_unconfirmed",
        ]
        asked = random_id_daraja.queries
        clock.ahead = timedelta(minutes=20)
        await duka.app[RECONCILER].sweep()
        assert random_id_daraja.queries == asked  # a definite answer ends the asking
    finally:
        await runner.cleanup()


async def test_a_merchant_confirmed_attempt_takes_its_late_callbacks_receipt(
    duka_with_timeouts: RunningDuka,
) -> None:
    """The merchant saw the money and confirmed the unconfirmed attempt; its callback
    then arrives (with an id we never learned): it adds the receipt, nothing more."""
    duka = duka_with_timeouts
    order_id = await lost_push(duka, "1")
    await asyncio.sleep(1.1)
    await duka.app[RECONCILER].sweep()
    [attempt] = await payment_rows(duka.engine, order_id)
    assert attempt.result_code == "unconfirmed"
    async with duka.engine.connect() as conn:
        reference = (await conn.execute(select(orders.c.reference))).scalar_one()
    done = await duka.app[DATABASE].transaction(
        review.resolve_order,
        reference,
        review.OrderDecision.PAID,
        "seen in the statement",
        actor="terminal:merchant",
        now=datetime.now(UTC),
    )
    assert "now paid" in done
    [attempt] = await payment_rows(duka.engine, order_id)
    assert (attempt.status, attempt.settled_by, attempt.mpesa_receipt) == ("paid", "merchant", None)

    own_url = attempt_url(duka.callback_url, attempt.id)
    await post(duka, success_body("ws_CO_never_learned", "350.00", "QKX0000007"), own_url)
    [attempt] = await payment_rows(duka.engine, order_id)
    assert attempt.mpesa_receipt == "QKX0000007"
    assert await unmatched_rows(duka) == []
    assert kinds(await outbox_rows(duka.engine)) == [
        "payment_check",
        "payment_paid",
        "payment_unconfirmed",
    ]


_FAIL_PAYING = {
    "sqlite": [
        "CREATE TRIGGER fail_paying BEFORE UPDATE OF status ON payments"
        " WHEN NEW.status = 'paid' BEGIN SELECT RAISE(ABORT, 'injected'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_paying() RETURNS trigger AS $$ BEGIN"
        " RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_paying BEFORE UPDATE OF status ON payments"
        " FOR EACH ROW WHEN (NEW.status = 'paid') EXECUTE FUNCTION fail_paying()",
    ],
}


async def test_a_paid_callback_that_keeps_failing_to_apply_becomes_unmatched_money(
    duka: RunningDuka,
) -> None:
    """Stored and acknowledged, but every try to apply it fails: retried meanwhile, then
    shown to the merchant as unmatched money instead of sitting in an error state."""
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, PHONE)
    [attempt] = await payment_rows(duka.engine, order.id)
    async with duka.engine.begin() as conn:
        for statement in _FAIL_PAYING[duka.engine.dialect.name]:
            await conn.execute(text(statement))
    body = success_body(attempt.checkout_request_id, "350.00", "QKX0000008")
    own_url = attempt_url(duka.callback_url, attempt.id)
    assert (await post(duka, body, own_url)).status_code == 200  # stored, so acknowledged

    async def inbox_gave_up() -> bool:  # it tries once more on its own, after answering
        [event] = await event_rows(duka.engine, "callback")
        return str(event.note).startswith("not applied yet")

    await wait_until(inbox_gave_up, what="the inbox's own second try")
    await duka.app[RECONCILER].sweep()
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "error"
    assert await unmatched_rows(duka) == []

    await asyncio.sleep(1.1)
    await duka.app[RECONCILER].sweep()
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "unmatched"
    [money] = await unmatched_rows(duka)
    assert (money.receipt, money.reason, money.amount) == ("QKX0000008", "not_applied", 350)
    assert "unmatched_payment" in kinds(await outbox_rows(duka.engine))  # the merchant is told
