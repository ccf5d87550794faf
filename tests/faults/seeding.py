"""Pending payments seeded into a process's SQLite file, callbacks posted at it, and what the
file says afterwards (read-only ``sqlite3``, so nothing here changes what it checks).

The rows and bodies are the callback benchmark's (``bench.callbacks._seed_rows`` via
``seed``, ``bench.loadgen.callback_body``): payment ``i`` (ids from 1) is pending, has the
CheckoutRequestID ``ws_CO_bench_<i>``, its own per-attempt callback URL, and a successful
callback with receipt ``BEN<i>`` for its order's total.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy import update

from bench import loadgen
from bench.callbacks import seed
from storage.engine import create_engine, migrate
from storage.schema import payments
from storage.sealing import Sealer, install
from tests.conftest import DATA_KEY
from tests.faults.process import DukaProcess

# Fixed, so a restarted process serves the same per-attempt URLs (in simulator mode an
# unset MPESA_CALLBACK_URL gets a fresh random secret at each start).
CALLBACK_SECRET = "faults-callback-secret-0123456789abcdefgh"
CONNECTIONS = 50


def callback_url(process: DukaProcess) -> str:
    """The base callback URL; each seeded attempt's is ``<this>/<id>/<token>``."""
    return f"{process.url}/hooks/stk/{CALLBACK_SECRET}"


def use_fixed_callback_url(process: DukaProcess) -> str:
    url = callback_url(process)
    process.env["MPESA_CALLBACK_URL"] = url
    return url


async def seed_pending_payments(database: Path, count: int) -> None:
    """Migrate ``database`` and add ``count`` pending payments (ids 1..count), one per order."""
    sealer = Sealer.from_env({"DUKA_DATA_KEY": DATA_KEY})
    assert sealer is not None
    engine = create_engine(f"sqlite+aiosqlite:///{database}", sealer)
    try:
        await migrate(engine)
        await seed(engine, database, count, 0)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Callback:
    payment_id: int
    path: str
    body: bytes


def callbacks_for(url: str, payment_ids: range) -> list[Callback]:
    """The success callback of each seeded payment, at its own attempt's URL."""
    paths = loadgen.attempt_paths(url, payment_ids.start, len(payment_ids))
    return [
        Callback(payment_id, path, loadgen.callback_body(loadgen.MEASURED_GROUP, payment_id))
        for payment_id, path in zip(payment_ids, paths, strict=True)
    ]


@dataclass
class Burst:
    """What the sender saw: 200 + ResultCode 0 (acknowledged), another answer, or none."""

    acknowledged: set[int] = field(default_factory=set)
    answered: Counter[int] = field(default_factory=Counter)  # by HTTP status, not acknowledged
    unanswered: set[int] = field(default_factory=set)  # connection failed or was cut

    @property
    def sent(self) -> int:
        return len(self.acknowledged) + sum(self.answered.values()) + len(self.unanswered)


async def post_callbacks(
    base: str,
    callbacks: Iterable[Callback],
    *,
    connections: int = CONNECTIONS,
    stop_after: int | None = None,
    on_stop: Callable[[], None] = lambda: None,
) -> Burst:
    """POST every callback over ``connections`` keep-alive connections (a closed loop, as
    Daraja's many senders would). When ``stop_after`` are acknowledged, ``on_stop`` runs
    (e.g. SIGKILL the server) and nothing new is sent; requests in flight end as they end."""
    burst = Burst()
    work: Iterator[Callback] = iter(callbacks)
    stopped = False
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal stopped
        for callback in work:  # one shared iterator: a slow connection takes fewer
            if stopped:
                return
            try:
                async with session.post(
                    base + callback.path,
                    data=callback.body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    payload = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                burst.unanswered.add(callback.payment_id)
                continue
            if response.status == 200 and json.loads(payload).get("ResultCode") == 0:
                burst.acknowledged.add(callback.payment_id)
            else:
                burst.answered[response.status] += 1
            if not stopped and stop_after is not None and len(burst.acknowledged) >= stop_after:
                stopped = True
                on_stop()

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(connections)))
    return burst


@dataclass(frozen=True)
class PaymentState:
    status: str
    order_status: str
    updated_at: str
    order_updated_at: str
    receipt: str | None
    settled_by: str | None
    outbox: tuple[str, ...]  # the audiences of its order's messages, sorted
    events: tuple[str, ...]  # its events as "source:status" (e.g. "callback:applied"), sorted


def read_payments(database: Path) -> dict[int, PaymentState]:
    """Every payment with its order, outbox rows and events, read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        outbox: dict[int, list[str]] = {}
        for order_id, audience in db.execute("SELECT order_id, audience FROM outbox"):
            outbox.setdefault(order_id, []).append(audience)
        events: dict[int, list[str]] = {}
        query = "SELECT payment_id, source, status FROM payment_events WHERE payment_id NOT NULL"
        for payment_id, source, status in db.execute(query):
            events.setdefault(payment_id, []).append(f"{source}:{status}")
        rows = db.execute(
            "SELECT p.id, p.order_id, p.status, o.status, p.updated_at, o.updated_at, "
            "p.mpesa_receipt, p.settled_by FROM payments p JOIN orders o ON o.id = p.order_id"
        )
        return {
            payment_id: PaymentState(
                status,
                order_status,
                updated,
                order_updated,
                receipt,
                settled_by,
                tuple(sorted(outbox.get(order_id, []))),
                tuple(sorted(events.get(payment_id, []))),
            )
            for (
                payment_id,
                order_id,
                status,
                order_status,
                updated,
                order_updated,
                receipt,
                settled_by,
            ) in rows
        }


def event_counts(database: Path) -> Counter[str]:
    """payment_events by status, read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return Counter(
            {
                status: n
                for status, n in db.execute(
                    "SELECT status, count(*) FROM payment_events GROUP BY status"
                )
            }
        )


def replace_checkout_ids(
    database: Path, checkout_ids: dict[int, str], query_at: datetime | None = None
) -> None:
    """Give seeded payments the CheckoutRequestIDs a (simulated) Daraja answered their pushes
    with, so STK queries about them get real answers; ``query_at``: their first query is due
    then (seeded: a minute after seeding)."""
    sealer = Sealer.from_env({"DUKA_DATA_KEY": DATA_KEY})
    assert sealer is not None
    engine = create_blocking_engine(f"sqlite:///{database}")
    install(engine.dialect, sealer)
    try:
        with engine.begin() as conn:
            for payment_id, checkout_id in checkout_ids.items():
                conn.execute(
                    update(payments)
                    .where(payments.c.id == payment_id)
                    .values(checkout_request_id=checkout_id)
                )
                if query_at is not None:
                    conn.execute(
                        update(payments)
                        .where(payments.c.id == payment_id)
                        .values(next_query_at=query_at)
                    )
    finally:
        engine.dispose()


def outbox_messages(database: Path) -> Counter[tuple[str, str]]:
    """Outbox rows by (audience, kind), read-only. A merchant message is one row per fact
    plus, once expanded, one per merchant chat."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return Counter(db.execute("SELECT audience, kind FROM outbox WHERE status != 'expanded'"))
