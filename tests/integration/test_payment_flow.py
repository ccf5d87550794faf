"""Orders paid through the real server, the Daraja simulator and a real database, over HTTP.

The outcome of each push is chosen by the simulator's phone-number rules
(``payments.simulator.rules``): ...001 cancelled, ...005 duplicated callback, ...006
callback dropped, ...007 never resolves, ...009 wrong amount paid.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import PAYMENTS, RECONCILER
from payments.errors import SubscriberBusy
from payments.phone import InvalidPhoneNumber
from payments.service import (
    OrderNotPayable,
    PaymentInProgress,
    PaymentNotStarted,
    PaymentStarted,
)
from payments.simulator import SimulatorConfig, rules, start_simulator
from payments.states import PaymentStatus
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.helpers import (
    event_rows,
    make_order,
    order_status,
    outbox_rows,
    payment_rows,
    wait_for_payment_status,
    wait_until,
)


def kinds(rows: list[dict[str, object]]) -> list[tuple[object, object]]:
    return sorted((row["audience"], row["kind"]) for row in rows)


async def test_order_paid_end_to_end(duka: RunningDuka) -> None:
    """A push, the PIN, the callback: payment PAID with receipt, one message each."""
    order = await make_order(duka.engine)
    started = await duka.app[PAYMENTS].start_payment(order.id, "0712 345 678")
    assert started.status is PaymentStatus.PENDING
    assert started.amount == order.total == 350

    payment = await wait_for_payment_status(duka.engine, order.id, "paid")
    assert payment.mpesa_receipt is not None
    assert len(payment.mpesa_receipt) == 10
    assert payment.paid_amount == 350
    assert payment.paid_msisdn == "254712345678"
    assert payment.settled_by == "callback"
    assert await order_status(duka.engine, order.id) == "paid"
    messages = await outbox_rows(duka.engine, order.id)
    assert kinds(messages) == [("customer", "payment_paid"), ("merchant", "order_paid")]
    assert all(m["payload"]["receipt"] == payment.mpesa_receipt for m in messages)
    push = duka.simulator.push_requests[0]
    assert push["AccountReference"] == order.reference
    assert push["Amount"] == 350


async def test_duplicate_callback_changes_nothing(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712 000 005")
    await wait_until(lambda: len(duka.simulator.callbacks_sent) == 2, what="two callbacks")
    await wait_until(lambda: _events_settled(duka), what="both callbacks stored")
    callbacks = await event_rows(duka.engine, "callback")
    assert sorted(e.status for e in callbacks) == ["applied", "duplicate"]
    assert len(await outbox_rows(duka.engine, order.id)) == 2
    assert (await payment_rows(duka.engine, order.id))[0].status == "paid"


async def test_failed_payment_then_retry_with_another_number(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712000001")
    failed = await wait_for_payment_status(duka.engine, order.id, "failed")
    assert failed.result_code == "1032"
    assert failed.result_desc.startswith("Request cancelled by user")
    assert await order_status(duka.engine, order.id) == "awaiting_payment"
    [message] = await outbox_rows(duka.engine, order.id)
    assert (message["kind"], message["payload"]["reason"]) == ("payment_failed", "cancelled")

    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    await wait_for_payment_status(duka.engine, order.id, "paid")
    assert await order_status(duka.engine, order.id) == "paid"
    assert kinds(await outbox_rows(duka.engine, order.id)) == [
        ("customer", "payment_failed"),
        ("customer", "payment_paid"),
        ("merchant", "order_paid"),
    ]


async def test_missing_callback_is_reconciled_by_query(duka: RunningDuka) -> None:
    """The simulator drops the callback; the reconciler's STK query finds the payment."""
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712000006")
    await asyncio.sleep(0.3)  # past query_after (0.2 s in the test config)
    report = await duka.app[RECONCILER].sweep()
    assert report.queried == 1
    payment = (await payment_rows(duka.engine, order.id))[0]
    assert payment.status == "paid"
    assert payment.settled_by == "query"
    assert payment.mpesa_receipt is None  # the query answer carries no receipt
    assert duka.simulator.callbacks_sent == []
    assert kinds(await outbox_rows(duka.engine, order.id)) == [
        ("customer", "payment_paid"),
        ("merchant", "order_paid"),
    ]


async def test_unanswered_push_expires_after_last_query(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    # The attempt lives 4 s here, not TEST_TOML's 1 s: on a busy machine the first sweep
    # could otherwise come after the attempt's end.
    toml = TEST_TOML.replace("expire_after_seconds = 1.0", "expire_after_seconds = 4.0")
    assert toml != TEST_TOML
    config = make_config(database_url, free_socket.getsockname()[1], tmp_path, toml=toml)
    duka, runner = await start_duka(config, free_socket)
    try:
        await _expires_after_its_last_query(duka)
    finally:
        await runner.cleanup()


async def _expires_after_its_last_query(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712000007")
    await asyncio.sleep(0.3)
    await duka.app[RECONCILER].sweep()
    assert (await payment_rows(duka.engine, order.id))[0].status == "pending"
    await asyncio.sleep(3.8)  # past expire_after (4 s)
    report = await duka.app[RECONCILER].sweep()
    assert report.expired == 1
    payment = (await payment_rows(duka.engine, order.id))[0]
    assert payment.status == "expired"
    assert payment.query_count >= 1
    [message] = await outbox_rows(duka.engine, order.id)
    assert message["payload"]["reason"] == "no_answer"
    queries = await event_rows(duka.engine, "query")
    assert queries
    assert all(q.note == "still being processed" for q in queries)


async def test_wrong_amount_flags_the_order_for_the_merchant(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712000009")
    payment = await wait_for_payment_status(duka.engine, order.id, "paid")
    assert payment.paid_amount == order.total - 1
    assert await order_status(duka.engine, order.id) == "needs_review"
    messages = await outbox_rows(duka.engine, order.id)
    assert kinds(messages) == [
        ("customer", "payment_under_review"),
        ("merchant", "payment_needs_review"),
    ]
    assert messages[1]["payload"]["why"] == "amount_mismatch"


async def test_reconciler_never_downgrades_a_callback_confirmed_payment(
    duka: RunningDuka,
) -> None:
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    paid = await wait_for_payment_status(duka.engine, order.id, "paid")
    await asyncio.sleep(0.3)
    report = await duka.app[RECONCILER].sweep()
    assert report.queried == 0  # only pending attempts are queried
    assert (await payment_rows(duka.engine, order.id))[0].mpesa_receipt == paid.mpesa_receipt


async def _events_settled(duka: RunningDuka) -> bool:
    rows = await event_rows(duka.engine, "callback")
    return len(rows) == 2 and all(r.status != "received" for r in rows)


@pytest.fixture
async def duka_with_short_timeout(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[RunningDuka]:
    """Pushes time out after 0.3 s."""
    toml = TEST_TOML + "\n[mpesa]\nrequest_timeout_seconds = 0.3\n"
    config = make_config(database_url, free_socket.getsockname()[1], tmp_path, toml=toml)
    duka, runner = await start_duka(config, free_socket)
    try:
        yield duka
    finally:
        await runner.cleanup()


async def test_paid_callback_after_a_lost_push_answer_is_matched_by_phone_and_amount(
    duka_with_short_timeout: RunningDuka,
) -> None:
    """The push timed out, so we never learned its id; the customer paid anyway."""
    duka = duka_with_short_timeout
    order = await make_order(duka.engine)
    duka.simulator.fail_next_push(delay_seconds=1.0)
    started = await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    assert started.status is PaymentStatus.UNKNOWN
    payment = await wait_for_payment_status(duka.engine, order.id, "paid")
    assert payment.mpesa_receipt is not None
    assert payment.checkout_request_id == next(iter(duka.simulator.transactions))
    assert len(duka.simulator.push_requests) == 1
    assert len(await outbox_rows(duka.engine, order.id)) == 2


async def test_push_timeout_leaves_attempt_unknown_and_blocks_a_second_push(
    duka_with_short_timeout: RunningDuka,
) -> None:
    duka = duka_with_short_timeout
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    duka.simulator.fail_next_push(delay_seconds=1.0)
    started = await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    assert started.status is PaymentStatus.UNKNOWN
    with pytest.raises(PaymentInProgress):
        await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    assert len(duka.simulator.push_requests) == 1
    [payment] = await payment_rows(duka.engine, order.id)
    assert payment.status == "unknown"
    await asyncio.sleep(1.1)  # past expire_after: the reconciler closes the attempt
    assert (await duka.app[RECONCILER].sweep()).expired == 1
    assert (await payment_rows(duka.engine, order.id))[0].status == "expired"


async def test_refused_push_fails_the_attempt_and_the_customer_can_retry(
    duka: RunningDuka,
) -> None:
    order = await make_order(duka.engine)
    with pytest.raises(SubscriberBusy):
        await duka.app[PAYMENTS].start_payment(order.id, "0712000008")
    [refused] = await payment_rows(duka.engine, order.id)
    assert (refused.status, refused.result_code) == ("failed", "500.001.1001")
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    await wait_for_payment_status(duka.engine, order.id, "paid")


async def test_two_simultaneous_pay_taps_send_one_push(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    service = duka.app[PAYMENTS]
    outcomes = await asyncio.gather(
        *(service.start_payment(order.id, "0712345678") for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, PaymentStarted) for o in outcomes) == 1
    # The others were refused: still in progress, or (if the PIN was fast) already paid.
    assert all(isinstance(o, PaymentStarted | PaymentNotStarted) for o in outcomes), outcomes
    assert len(duka.simulator.push_requests) == 1


async def test_paid_order_cannot_be_paid_again(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    await wait_for_payment_status(duka.engine, order.id, "paid")
    with pytest.raises(OrderNotPayable):
        await duka.app[PAYMENTS].start_payment(order.id, "0712345678")


async def test_invalid_phone_is_refused_and_nothing_is_stored(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    with pytest.raises(InvalidPhoneNumber, match="not a Kenyan mobile number"):
        await duka.app[PAYMENTS].start_payment(order.id, "0712 34")
    assert await payment_rows(duka.engine, order.id) == []
    assert duka.simulator.push_requests == []


async def test_restart_reconciles_an_attempt_left_pending(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """The process stops while a callback is lost; the next start-up settles the payment."""
    daraja = await start_simulator(SimulatorConfig(callback_delay_seconds=0.05))
    try:
        port = free_socket.getsockname()[1]
        config = make_config(database_url, port, tmp_path, MPESA_BASE_URL=daraja.base_url)
        duka, runner = await start_duka(config, free_socket)
        order = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(order.id, "0712000006")  # callback dropped
        await runner.cleanup()
        await asyncio.sleep(0.25)  # past query_after while the process is down

        with socket.socket() as fresh:
            fresh.bind(("127.0.0.1", 0))
            config = make_config(
                database_url, fresh.getsockname()[1], tmp_path, MPESA_BASE_URL=daraja.base_url
            )
            restarted, runner = await start_duka(config, fresh, run_reconciler=True)
            try:
                payment = await wait_for_payment_status(restarted.engine, order.id, "paid")
                assert payment.settled_by == "query"
            finally:
                await runner.cleanup()
    finally:
        await daraja.stop()
