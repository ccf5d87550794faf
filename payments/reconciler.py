"""The safety net for missing callbacks: query pending attempts, expire stale ones.

Every sweep (and one at start-up, so a restart never leaves an attempt stuck):
1. callbacks stored without a matching attempt (or not yet applied) are applied;
2. pending attempts whose next query is due are queried, at a bounded rate; answers
   go through the same ``ledger.plan_results`` as callbacks; once an attempt is older
   than ``expire_after`` its last query is made and, if Daraja still says "being
   processed", it expires (while queries fail, it keeps being asked instead);
3. attempts that never got a CheckoutRequestID (push outcome unknown, or a crash
   mid-push) cannot be queried and expire after ``expire_after``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from payments import ledger
from payments.daraja_client import DarajaClient, QueryAnswer
from payments.errors import QueryFailed
from payments.settings import ReconcileSettings
from payments.settlement import EventStatus
from payments.states import PaymentStatus
from storage.schema import payments

log = logging.getLogger(__name__)
ORPHAN_LOOKBACK = timedelta(days=1)
# Past the deadline, an attempt is expired only on Daraja's word ("being processed"); while
# queries fail it is asked again this often, and given up only after GIVE_UP_AFTER.
RETRY_AFTER_FAILED_QUERY = timedelta(minutes=1)
GIVE_UP_AFTER = timedelta(days=1)


@dataclass(slots=True)
class SweepReport:
    adopted: int = 0
    queried: int = 0
    settled: int = 0
    expired: int = 0


class Reconciler:
    def __init__(
        self,
        engine: AsyncEngine,
        client: DarajaClient,
        settings: ReconcileSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._client = client
        self._settings = settings
        self._clock = clock
        self._min_gap = 1.0 / settings.max_queries_per_second

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("reconciliation sweep failed; trying again next interval")
            await asyncio.sleep(self._settings.sweep_interval_seconds)

    async def sweep(self) -> SweepReport:
        """One pass; each phase on its own, so a failing one does not stop the others."""
        report = SweepReport()
        for phase in (self._adopt_orphans, self._query_due, self._expire_unqueryable):
            try:
                await phase(report)
            except Exception:
                log.exception("reconciliation phase %s failed", phase.__name__)
        return report

    async def _adopt_orphans(self, report: SweepReport) -> None:
        now = self._clock()
        async with self._engine.begin() as conn:
            adopted = await ledger.adopt_orphans(conn, now, received_after=now - ORPHAN_LOOKBACK)
        report.adopted = sum(1 for s in adopted if s is not None and s.changed)

    async def _query_due(self, report: SweepReport) -> None:
        for payment_id, checkout_id, accepted_at in await self._due_queries(self._clock()):
            if report.queried:
                await asyncio.sleep(self._min_gap)  # bounded rate: Spike Arrest is per app
            report.queried += 1
            try:
                outcome = await self._query_one(payment_id, checkout_id, accepted_at)
            except Exception:
                log.exception("reconciling payment %d failed", payment_id)
                continue
            report.settled += outcome == "settled"
            report.expired += outcome == "expired"

    async def _due_queries(self, now: datetime) -> list[tuple[int, str, datetime]]:
        limit = max(
            1, int(self._settings.sweep_interval_seconds * self._settings.max_queries_per_second)
        )
        query = (
            select(payments.c.id, payments.c.checkout_request_id, payments.c.push_accepted_at)
            .where(payments.c.status == str(PaymentStatus.PENDING))
            .where(or_(payments.c.next_query_at.is_(None), payments.c.next_query_at <= now))
            .order_by(payments.c.next_query_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(r.id, r.checkout_request_id, r.push_accepted_at or now) for r in rows]

    async def _query_one(self, payment_id: int, checkout_id: str, accepted_at: datetime) -> str:
        answer: QueryAnswer | None
        try:
            answer = await self._client.stk_query(checkout_id)
        except QueryFailed as exc:
            log.warning("STK query for payment %d failed: %s", payment_id, exc)
            answer = None
        now = self._clock()
        expires_at = accepted_at + timedelta(seconds=self._settings.expire_after_seconds)
        async with self._engine.begin() as conn:
            if answer is not None and answer.result is not None:
                plan = await ledger.plan_results(conn, [answer.result], now)
                [mark] = plan.event_marks()
                event = ledger.NewEvent("query", json.dumps(answer.raw), checkout_id, *mark)
                await ledger.insert_events(conn, [event], now)
                await ledger.write_plan(conn, plan, now)
                [settled] = plan.settlements
                return "settled" if settled is not None and settled.changed else "unchanged"
            if answer is not None:
                event = ledger.NewEvent(
                    "query",
                    json.dumps(answer.raw),
                    checkout_id,
                    EventStatus.IGNORED,
                    "still being processed",
                    payment_id,
                )
                await ledger.insert_events(conn, [event], now)
            past_deadline = now >= expires_at
            if past_deadline and (answer is not None or now >= expires_at + GIVE_UP_AFTER):
                # Still "being processed" after the prompt's lifetime: it was never answered.
                expired = await ledger.expire_payment(conn, payment_id, now)
                return "expired" if expired is not None else "unchanged"
            if past_deadline:
                # No answer from Daraja at all: expiring now could invite a second payment
                # of money that already moved. Keep asking, less and less often.
                next_query = now + RETRY_AFTER_FAILED_QUERY
            else:
                interval = timedelta(seconds=self._settings.query_interval_seconds)
                next_query = min(now + interval, expires_at)
            await ledger.schedule_next_query(conn, payment_id, next_query)
            return "pending"

    async def _expire_unqueryable(self, report: SweepReport) -> None:
        now = self._clock()
        cutoff = now - timedelta(seconds=self._settings.expire_after_seconds)
        query = (
            select(payments.c.id)
            .where(payments.c.status.in_([str(PaymentStatus.CREATED), str(PaymentStatus.UNKNOWN)]))
            .where(payments.c.created_at <= cutoff)
        )
        async with self._engine.begin() as conn:
            for (payment_id,) in (await conn.execute(query)).all():
                report.expired += await ledger.expire_payment(conn, payment_id, now) is not None
