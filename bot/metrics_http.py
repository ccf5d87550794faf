"""``GET /metrics``: the counters of ``payments.metrics`` and what the database holds now.

The database's share (open payments, the outbox backlog and its oldest message, unmatched
money) is read at each scrape rather than kept in gauges: counting it as it changes would
touch every writer, and a restart would lose it. With ``DUKA_METRICS_TOKEN`` set, a
scrape must bring ``Authorization: Bearer <token>``; with ``DUKA_METRICS_PORT`` set, the
endpoint is served on that port alone (``serve_apart``), not on the public one.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection, func, select

from bot.health import BackgroundTasks
from payments.metrics import Metrics
from payments.outbox import OutboxStatus
from payments.unmatched import UnmatchedStatus
from storage.engine import Database
from storage.schema import OPEN_PAYMENT_STATUSES, outbox, payments, unmatched_payments

log = logging.getLogger(__name__)
# The classic text format, which every Prometheus reads (generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Stored:
    """What the database holds right now, as the scrape-time gauges show it."""

    payments_open: dict[str, int]
    outbox_backlog: int
    outbox_oldest_age_seconds: float
    unmatched_open: int
    unmatched_open_amount: int


def read_stored(conn: Connection, now: datetime) -> Stored:
    by_status = dict.fromkeys(OPEN_PAYMENT_STATUSES, 0)
    rows = conn.execute(
        select(payments.c.status, func.count())
        .where(payments.c.status.in_(OPEN_PAYMENT_STATUSES))
        .group_by(payments.c.status)
    )
    by_status.update({str(status): int(count) for status, count in rows})
    backlog, oldest = conn.execute(
        select(func.count(), func.min(outbox.c.created_at)).where(
            outbox.c.status == OutboxStatus.PENDING
        )
    ).one()
    unmatched, amount = conn.execute(
        select(func.count(), func.coalesce(func.sum(unmatched_payments.c.amount), 0)).where(
            unmatched_payments.c.status == UnmatchedStatus.OPEN
        )
    ).one()
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return Stored(by_status, int(backlog), age, int(unmatched), int(amount))


def stored_families(stored: Stored | None, background: dict[str, bool]) -> Iterable[Metric]:
    """The scrape-time gauges; without the database's answer, only ``duka_database_up 0``."""
    up = GaugeMetricFamily("duka_database_up", "1 when the database answered this scrape")
    up.add_metric([], 1 if stored is not None else 0)
    yield up
    tasks = GaugeMetricFamily(
        "duka_background_task_up", "1 while a background task runs", labels=["task"]
    )
    for name, alive in background.items():
        tasks.add_metric([name], 1 if alive else 0)
    yield tasks
    if stored is None:
        return
    open_payments = GaugeMetricFamily(
        "duka_payments_open", "Payment attempts not settled yet, by status", labels=["status"]
    )
    for status, count in stored.payments_open.items():
        open_payments.add_metric([status], count)
    yield open_payments
    yield GaugeMetricFamily(
        "duka_outbox_backlog", "Outbox messages waiting to be sent", value=stored.outbox_backlog
    )
    yield GaugeMetricFamily(
        "duka_outbox_oldest_age_seconds",
        "Age of the oldest message waiting to be sent (0: none waiting)",
        value=stored.outbox_oldest_age_seconds,
    )
    yield GaugeMetricFamily(
        "duka_unmatched_payments_open",
        "Money tied to no order, waiting for the merchant's decision",
        value=stored.unmatched_open,
    )
    yield GaugeMetricFamily(
        "duka_unmatched_amount_open",
        "KES tied to no order, waiting for the merchant's decision",
        value=stored.unmatched_open_amount,
    )


class _Families:
    """A collector for one scrape's ready-made families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def metrics_handler(
    metrics: Metrics,
    database: Callable[[], Database | None],
    background: BackgroundTasks,
    clock: Callable[[], datetime],
    token: str = "",
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``/metrics`` route; ``database`` gives the database once start-up opened it."""

    async def scrape(request: web.Request) -> web.Response:
        if token and not _bearer_matches(request, token):
            return web.Response(
                status=401,
                text="a bearer token is required\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        stored = await _read(database(), clock())
        once = CollectorRegistry(auto_describe=False)
        once.register(_Families(stored_families(stored, background.states())))
        body = generate_latest(metrics.registry) + generate_latest(once)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return scrape


async def _read(database: Database | None, now: datetime) -> Stored | None:
    if database is None:
        return None
    try:
        return await database.transaction(read_stored, now)
    except Exception:
        log.warning("metrics: the database could not be read", exc_info=True)
        return None


def _bearer_matches(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


@contextlib.asynccontextmanager
async def serve_apart(
    handler: Callable[[web.Request], Awaitable[web.Response]], host: str, port: int
) -> AsyncIterator[str]:
    """``/metrics`` alone on ``host:port`` while the context lasts; yields its base URL."""
    app = web.Application()
    app.add_routes([web.get("/metrics", handler)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
