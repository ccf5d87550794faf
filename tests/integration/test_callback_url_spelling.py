"""The callback URL as configured, as sent to Daraja and as served are one URL, over real
HTTP: the simulator posts to the CallBackURL it received, and the order gets paid."""

from __future__ import annotations

import socket
from pathlib import Path

from bot.app import PAYMENTS
from payments.states import PaymentStatus
from tests.conftest import CALLBACK_SECRET, make_config, start_duka
from tests.helpers import attempt_url, make_order, order_status, wait_for_payment_status


async def test_a_trailing_slash_in_the_callback_url_still_gets_the_order_paid(
    sqlite_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """MPESA_CALLBACK_URL ending in "/": the push carries the served URL, the callback lands."""
    port = free_socket.getsockname()[1]
    config = make_config(
        sqlite_url,
        port,
        tmp_path,
        MPESA_CALLBACK_URL=f"http://127.0.0.1:{port}/hooks/stk/{CALLBACK_SECRET}/",
    )
    duka, runner = await start_duka(config, free_socket)
    try:
        order = await make_order(duka.engine)
        started = await duka.app[PAYMENTS].start_payment(order.id, "0712 345 678")
        assert started.status is PaymentStatus.PENDING
        push = duka.simulator.push_requests[0]
        base = f"http://127.0.0.1:{port}/hooks/stk/{CALLBACK_SECRET}"
        assert push["CallBackURL"] == attempt_url(base, started.payment_id)  # no "//" inside

        payment = await wait_for_payment_status(duka.engine, order.id, "paid")
        assert payment.settled_by == "callback"
        assert await order_status(duka.engine, order.id) == "paid"
    finally:
        await runner.cleanup()
