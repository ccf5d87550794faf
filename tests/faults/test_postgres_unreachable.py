"""Fault matrix: PostgreSQL unreachable while Daraja's callbacks arrive (a restart, a
network blip), through a proxy the test cuts (tests/faults/tcp_proxy.py).

Nothing can be stored, so each callback is answered 503, never 200: Daraja does not send
a callback twice, so the reconciler must learn the result by STK query once the
database is back. Every payment then ends paid, exactly once."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.app import PAYMENTS
from payments.simulator import rules
from tests.conftest import make_config, start_duka
from tests.faults.tcp_proxy import TcpProxy
from tests.helpers import make_order, outbox_rows, payment_rows, wait_until

ORDERS = 5
# The tests' usual settings, but a payment is not given up on while the database is away.
TOML = """
[shop]
name = "Test Duka"
[reconciliation]
query_after_seconds = 0.5
query_interval_seconds = 0.5
expire_after_seconds = 600
max_queries_per_second = 50
sweep_interval_seconds = 0.3
[limits]
prompts_per_phone_per_10_minutes = 10
"""


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(postgres_url)
    running = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_callbacks_while_postgresql_is_unreachable_get_503_and_are_paid_by_query(
    postgres_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    through_proxy = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = make_config(
        through_proxy.render_as_string(hide_password=False),
        sock.getsockname()[1],
        tmp_path,
        toml=TOML,
    )
    duka, runner = await start_duka(config, sock, run_reconciler=True)
    try:
        simulator = duka.simulator
        orders = [await make_order(duka.engine) for _ in range(ORDERS)]
        checkout_ids = []
        for order in orders:
            # Daraja accepts the push and waits; the test says when the PIN is entered.
            simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
            await duka.app[PAYMENTS].start_payment(order.id, "0712 345 678")
            [payment] = await payment_rows(duka.engine, order.id)
            checkout_ids.append(payment.checkout_request_id)

        proxy.cut()
        for checkout_id in checkout_ids:
            simulator.resolve(checkout_id)  # Daraja POSTs each callback now, once
        sent = await simulator.wait_for_callbacks(ORDERS, timeout=30)
        answers = [status for _, _, status in sent]
        assert answers == [503] * ORDERS, f"nothing could be stored, yet answered {answers}"

        proxy.restore()

        async def all_paid() -> bool:
            rows = [await payment_rows(duka.engine, order.id) for order in orders]
            return all(len(r) == 1 and r[0].status == "paid" for r in rows)

        await wait_until(all_paid, timeout=30, what="every payment paid by STK query")
        for order in orders:
            [payment] = await payment_rows(duka.engine, order.id)
            assert payment.settled_by == "query"
            kinds = sorted(
                (m["audience"], m["kind"]) for m in await outbox_rows(duka.engine, order.id)
            )
            assert kinds == [("customer", "payment_paid"), ("merchant", "order_paid")]
    finally:
        proxy.restore()
        await runner.cleanup()
