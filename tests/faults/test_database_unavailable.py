"""Fault matrix: the database is unavailable while Daraja's callbacks arrive.

Another process holds SQLite's write lock (``BEGIN EXCLUSIVE``) while the Daraja
simulator delivers the callbacks of pushes Daraja accepted. Nothing can be stored while
the lock is held, so no callback may be acknowledged then; each one is either stored and
applied (200 after the lock), or refused (503) and found later by the reconciler's STK
query. Either way every payment ends paid exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bench import loadgen
from bot.config import load_config
from payments.callback_urls import attempt_callback_url
from payments.daraja_client import DarajaClient, StkPushRequest
from payments.simulator import RunningSimulator, SimulatorConfig, start_simulator
from tests.faults.process import DukaProcess
from tests.faults.seeding import (
    PaymentState,
    read_payments,
    replace_checkout_ids,
    seed_pending_payments,
    use_fixed_callback_url,
)

PAYMENTS = 20
# Longer than SQLite's busy timeout (storage/engine.py: 10 s): the group commit fails and
# the inbox falls back to storing callbacks one by one.
LOCK_SECONDS = 12
# Short reconciliation, so an STK query settles what a refused callback left pending.
TOML = """
[reconciliation]
query_after_seconds = 0.2
query_interval_seconds = 0.5
expire_after_seconds = 600
max_queries_per_second = 50
sweep_interval_seconds = 0.2
"""


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    # Callbacks only when the test resolves a push, and waited for as long as Duka takes.
    config = SimulatorConfig(callback_delay_seconds=3600, callback_timeout_seconds=60)
    running = await start_simulator(config)
    try:
        yield running
    finally:
        await running.stop()


async def _pushes_accepted(
    process: DukaProcess, simulator: RunningSimulator, url: str
) -> dict[int, str]:
    """Push for each seeded payment as Duka does (its own client, each attempt's own URL);
    the CheckoutRequestID Daraja gave each."""
    config = load_config(env=process.env, path=process.workdir / "config.toml")
    async with httpx.AsyncClient() as http:
        client = DarajaClient(config.daraja, http)
        checkout_ids = {}
        for payment_id in range(1, PAYMENTS + 1):
            accepted = await client.stk_push(
                StkPushRequest(
                    loadgen.MSISDN,
                    loadgen.order_total(payment_id),
                    f"BN-{payment_id:07d}",
                    callback_url=attempt_callback_url(url, payment_id),
                )
            )
            checkout_ids[payment_id] = accepted.checkout_request_id
    return checkout_ids


@contextlib.contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Another process's exclusive write transaction on the file (it writes nothing)."""
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def _payment_id(attempt_url: str) -> int:
    return int(attempt_url.rsplit("/", 2)[-2])


async def test_no_callback_is_acknowledged_while_the_database_is_locked_and_none_is_lost(
    duka_process: DukaProcess, simulator: RunningSimulator
) -> None:
    """Locked past SQLite's busy timeout while Daraja delivers 20 callbacks: no 200 while
    locked; afterwards each was answered 200 (stored and applied) or 503, and every payment
    is paid exactly once, by its callback or by an STK query."""
    (duka_process.workdir / "config.toml").write_text(TOML)
    duka_process.env["MPESA_BASE_URL"] = simulator.base_url
    url = use_fixed_callback_url(duka_process)
    await seed_pending_payments(duka_process.database, PAYMENTS)
    checkout_ids = await _pushes_accepted(duka_process, simulator, url)
    replace_checkout_ids(duka_process.database, checkout_ids, query_at=datetime.now(UTC))
    await duka_process.start()

    sim = simulator.simulator
    with write_lock(duka_process.database):
        for checkout_id in checkout_ids.values():
            sim.resolve(checkout_id)  # Daraja POSTs each callback now, once
        await asyncio.sleep(LOCK_SECONDS)
        answered_while_locked = [status for _, _, status in sim.callbacks_sent]
    assert 200 not in answered_while_locked, "acknowledged while nothing could be stored"

    sent = await sim.wait_for_callbacks(PAYMENTS, timeout=60)
    answers = {_payment_id(attempt): status for attempt, _, status in sent}
    assert set(answers) == set(range(1, PAYMENTS + 1))
    assert set(answers.values()) <= {200, 503}, answers
    await _all_paid(duka_process.database)
    after = read_payments(duka_process.database)
    not_once = {i: s for i, s in after.items() if not _settled_once(s)}
    assert not not_once, not_once
    refused = sorted(i for i, status in answers.items() if status == 503)
    # A 503 stored nothing: only the STK query can have paid it. A 200 stored its callback
    # (the query may still have got there first; the callback then adds the receipt).
    assert all(after[i].settled_by == "query" for i in refused), after
    acknowledged = [i for i in answers if i not in refused]
    assert all("callback:applied" in after[i].events for i in acknowledged), after
    assert all(after[i].receipt is not None for i in acknowledged), after
    print(
        f"lock {LOCK_SECONDS} s: {PAYMENTS} callbacks, "
        f"{sum(s == 200 for s in answers.values())} answered 200 after the lock, "
        f"{len(refused)} answered 503 (settled by STK query); 0 lost, 0 doubled"
    )


def _settled_once(state: PaymentState) -> bool:
    """Paid, order paid, one customer and one merchant message."""
    return (
        state.status == "paid"
        and state.order_status == "paid"
        and state.outbox == ("customer", "merchant")
    )


async def _all_paid(database: Path) -> None:
    """Until every payment is paid (the reconciler may still be querying), or 20 s."""
    for _ in range(200):
        if all(s.status == "paid" for s in read_payments(database).values()):
            return
        await asyncio.sleep(0.1)
