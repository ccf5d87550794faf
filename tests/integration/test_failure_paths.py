"""What happens when things go wrong: bad batches, lost answers, Daraja down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.app import PAYMENTS, RECONCILER
from payments.simulator import SimulatorConfig, rules, start_simulator
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.helpers import (
    attempt_url,
    event_rows,
    make_order,
    outbox_rows,
    payment_rows,
    wait_until,
)
from tests.integration.test_callback_webhook import success_body


async def pending_payment(duka: RunningDuka, chat_id: str) -> tuple[int, str, str]:
    """An order with a pending attempt that the simulator will never resolve by itself:
    (order id, CheckoutRequestID, the attempt's own callback URL)."""
    order = await make_order(duka.engine, chat_id=chat_id)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [payment] = await payment_rows(duka.engine, order.id)
    return order.id, payment.checkout_request_id, attempt_url(duka.callback_url, payment.id)


async def test_a_callback_that_cannot_be_applied_does_not_take_others_down(
    duka: RunningDuka, caplog: pytest.LogCaptureFixture
) -> None:
    """Two callbacks claim one receipt: the first pays; the second is kept, not applied
    (one M-Pesa transaction cannot pay two orders), and the other attempt stays open for
    the query to settle."""
    first_order, first_id, first_url = await pending_payment(duka, "1")
    second_order, second_id, second_url = await pending_payment(duka, "2")
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(
            client.post(first_url, content=success_body(first_id, receipt="SAME000001")),
            client.post(second_url, content=success_body(second_id, receipt="SAME000001")),
        )
    assert [a.status_code for a in answers] == [200, 200]  # both stored, so both accepted

    async def both_decided() -> bool:  # a batch that failed is applied one by one, after
        events = await event_rows(duka.engine, "callback")
        return sorted(e.status for e in events) == ["applied", "duplicate"]

    await wait_until(both_decided, what="one callback applied and the other a duplicate")
    statuses = sorted(
        [(await payment_rows(duka.engine, o))[0].status for o in (first_order, second_order)]
    )
    assert statuses == ["paid", "pending"]
    assert all("254712345678" not in r.getMessage() for r in caplog.records)
    assert [m["kind"] for m in await outbox_rows(duka.engine)] == ["payment_paid", "order_paid"]


async def test_a_broken_stored_event_does_not_stop_reconciliation(duka: RunningDuka) -> None:
    order, first_id, first_url = await pending_payment(duka, "1")
    _, second_id, second_url = await pending_payment(duka, "2")
    async with httpx.AsyncClient() as client:
        for checkout_id, url in ((first_id, first_url), (second_id, second_url)):
            await client.post(url, content=success_body(checkout_id, "350.00", "DUP0000001"))
    dropped = await make_order(duka.engine, chat_id="3")
    await duka.app[PAYMENTS].start_payment(dropped.id, "0712000006")  # callback dropped
    await asyncio.sleep(0.3)
    await duka.app[RECONCILER].sweep()
    await duka.app[RECONCILER].sweep()
    assert (await payment_rows(duka.engine, dropped.id))[0].status == "paid"
    assert (await payment_rows(duka.engine, order))[0].status == "paid"


async def test_callback_of_a_new_push_is_not_credited_to_an_old_expired_attempt(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """Same phone, same amount: the old attempt lost its push answer and expired."""
    toml = TEST_TOML + "\n[mpesa]\nrequest_timeout_seconds = 0.3\n"
    config = make_config(database_url, free_socket.getsockname()[1], tmp_path, toml=toml)
    duka, runner = await start_duka(config, free_socket)
    try:
        old = await make_order(duka.engine, chat_id="1")
        duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
        duka.simulator.fail_next_push(delay_seconds=1.0)
        await duka.app[PAYMENTS].start_payment(old.id, "0712345678")
        await asyncio.sleep(1.1)
        await duka.app[RECONCILER].sweep()
        assert (await payment_rows(duka.engine, old.id))[0].status == "expired"

        new = await make_order(duka.engine, chat_id="1")
        duka.simulator.answer_next_push_after_callback()
        await duka.app[PAYMENTS].start_payment(new.id, "0712345678")
        assert (await payment_rows(duka.engine, new.id))[0].status == "paid"
        assert (await payment_rows(duka.engine, old.id))[0].status == "expired"
        messages = [(m["order_id"], m["kind"]) for m in await outbox_rows(duka.engine)]
        # The old attempt never had M-Pesa's word: "unconfirmed", never "failed".
        assert sorted(kind for order_id, kind in messages if order_id == old.id) == [
            "payment_check",
            "payment_unconfirmed",
        ]
        assert sorted(kind for order_id, kind in messages if order_id == new.id) == [
            "order_paid",
            "payment_paid",
        ]
    finally:
        await runner.cleanup()


@pytest.fixture
async def duka_with_outside_daraja(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[tuple[RunningDuka, object]]:
    daraja = await start_simulator(SimulatorConfig(callback_delay_seconds=0.05))
    port = free_socket.getsockname()[1]
    config = make_config(database_url, port, tmp_path, MPESA_BASE_URL=daraja.base_url)
    duka, runner = await start_duka(config, free_socket)
    try:
        yield duka, daraja
    finally:
        await runner.cleanup()
        await daraja.stop()


async def test_attempt_is_not_expired_while_daraja_cannot_be_asked(
    duka_with_outside_daraja: tuple[RunningDuka, object],
) -> None:
    """Expiring without Daraja's word could invite a second payment of money that moved."""
    duka, daraja = duka_with_outside_daraja
    order = await make_order(duka.engine)
    await duka.app[PAYMENTS].start_payment(order.id, "0712000006")  # callback dropped
    await daraja.stop()  # type: ignore[attr-defined]
    await asyncio.sleep(1.1)  # past expire_after, with Daraja unreachable
    report = await duka.app[RECONCILER].sweep()
    assert (report.queried, report.expired) == (1, 0)
    payment = (await payment_rows(duka.engine, order.id))[0]
    assert payment.status == "pending"
    assert await outbox_rows(duka.engine, order.id) == []


async def test_unreadable_bodies_get_400_never_500(duka: RunningDuka) -> None:
    async with httpx.AsyncClient() as client:
        deep = b"[" * 30_000 + b"]" * 30_000  # deeper than the parser can go
        infinity = b'{"Body":{"stkCallback":{"CheckoutRequestID":"ws_CO_1","ResultCode":Infinity}}}'
        nul = b'{"Body":{"stkCallback":{"CheckoutRequestID":"ws_CO_\x00","ResultCode":1032}}}'
        long_id = success_body("ws_CO_" + "9" * 100)
        answers = [
            await client.post(duka.callback_url, content=body)
            for body in (deep, infinity, long_id, nul)
        ]
    assert [a.status_code for a in answers] == [400, 400, 400, 400]
    events = await event_rows(duka.engine, "callback")
    assert [e.status for e in events] == ["rejected"] * 4
    assert "\\x00" in events[-1].raw  # kept, with the NUL escaped so PostgreSQL takes it
