"""The safety net for missing callbacks: query pending attempts, expire stale ones.

Every sweep (and one at start-up, so a restart never leaves an attempt stuck):
1. callbacks stored without a matching attempt (or not yet applied) are applied; one
   that stays an orphan longer than ``expire_after`` becomes unmatched money (paid) or
   is set aside (failed);
2. pending attempts whose next query is due are queried, at a bounded rate; answers
   go through the same ``ledger.plan_results`` as callbacks; once an attempt is older
   than ``expire_after`` its last query is made and, if Daraja still says "being
   processed", it expires; while queries fail it keeps being asked, and after
   ``GIVE_UP_AFTER`` more it expires *unconfirmed* (never "failed") and is still asked
   about for a day, so that a late "paid" pays the order after all;
   a success callback held for confirmation (``payments.held``) makes its attempt due at
   once, and the answer confirms it or refutes it;
3. attempts that never got a CheckoutRequestID (push outcome unknown, or a crash
   mid-push) cannot be queried and expire, unconfirmed, after ``expire_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from payments import held, ledger
from payments.daraja_client import DarajaClient, QueryAnswer
from payments.errors import QueryFailed
from payments.metrics import Metrics
from payments.phone import mask_checkout_id
from payments.settings import ReconcileSettings
from payments.settlement import EventStatus
from payments.states import PaymentStatus
from storage import stock
from storage.engine import Database
from storage.leases import hold_lease, release_lease

log = logging.getLogger(__name__)
LEASE = "reconciler"
ORPHAN_LOOKBACK = timedelta(days=1)
# Past the deadline, an attempt is expired only on Daraja's word ("being processed"); while
# queries fail it is asked again this often, and given up only after GIVE_UP_AFTER.
RETRY_AFTER_FAILED_QUERY = timedelta(minutes=1)
# Then it ends "unconfirmed": the customer hears that the shop will check (never "failed"),
# the merchant gets it to check, and a late callback can still mark it paid.
GIVE_UP_AFTER = timedelta(minutes=10)
# An attempt that ended unconfirmed is still asked about (every RETRY_AFTER_FAILED_QUERY)
# for this long: if Daraja answers that the money moved, the order is paid after all.
KEEP_ASKING_UNCONFIRMED = timedelta(days=1)


@dataclass(slots=True)
class SweepReport:
    adopted: int = 0
    queried: int = 0
    settled: int = 0
    expired: int = 0
    stock_released: int = 0  # holds of abandoned orders given back


class Reconciler:
    def __init__(
        self,
        database: Database,
        client: DarajaClient,
        settings: ReconcileSettings,
        clock: Callable[[], datetime],
        on_applied: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        holder: str | None = None,
    ) -> None:
        self._database = database
        # Several processes share the database: only the one holding the lease sweeps
        # (see storage/leases.py). None: no lease (the tests' direct sweeps).
        self._holder = holder
        self._lease_term = timedelta(seconds=max(60.0, 4 * settings.sweep_interval_seconds))
        self.holds_lease = holder is None
        self._client = client
        self._metrics = metrics or Metrics()
        self._settings = settings
        self._clock = clock
        self._on_applied = on_applied  # e.g. wake the outbox dispatcher
        self._min_gap = 1.0 / settings.max_queries_per_second
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Sweep now, not at the next interval (a callback is held for confirmation)."""
        self._woken.set()

    async def run_forever(self) -> None:
        try:
            while True:
                self._woken.clear()
                if await self._may_sweep():
                    await self.sweep()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._woken.wait(), timeout=self._settings.sweep_interval_seconds
                    )
        finally:
            if self._holder is not None and self.holds_lease:
                # Stopping cleanly: another process takes over now, not when the lease lapses.
                with contextlib.suppress(Exception):
                    await self._database.transaction(release_lease, LEASE, self._holder)

    async def _may_sweep(self) -> bool:
        """Whether this process is the one that sweeps (it holds, or just took, the lease)."""
        if self._holder is None:
            return True
        try:
            held = await self._database.transaction(
                hold_lease, LEASE, self._holder, self._clock(), self._lease_term
            )
        except Exception:
            log.exception("could not renew the reconciler's lease; skipping this sweep")
            return False
        if held != self.holds_lease:
            log.info("reconciler: %s", "this process sweeps" if held else "another process sweeps")
        self.holds_lease = held
        return held

    async def sweep(self) -> SweepReport:
        """One pass; each phase on its own, so a failing one does not stop the others."""
        report = SweepReport()
        for phase in (
            self._adopt_orphans,
            self._query_due,
            self._expire_unqueryable,
            self._release_abandoned_stock,
        ):
            try:
                await phase(report)
            except SQLAlchemyError as exc:
                # The database is away (/readyz says so): a line, not a traceback a sweep.
                why = type(exc).__name__
                log.warning("reconciliation phase %s: database error (%s)", phase.__name__, why)
            except Exception:
                log.exception("reconciliation phase %s failed", phase.__name__)
        if self._on_applied is not None and (report.adopted or report.settled or report.expired):
            self._on_applied()  # the messages these changes queued go out now, not at a poll
        return report

    async def _release_abandoned_stock(self, report: SweepReport) -> None:
        """Orders confirmed and never paid give their stock back once their hold ends."""
        report.stock_released = await self._database.transaction(
            stock.release_expired, self._clock()
        )

    async def _adopt_orphans(self, report: SweepReport) -> None:
        now = self._clock()
        # An orphan older than an attempt's whole life will not meet its push answer.
        adopted = await self._database.transaction(
            ledger.adopt_orphans,
            now,
            received_after=now - ORPHAN_LOOKBACK,
            unmatched_after=timedelta(seconds=self._settings.expire_after_seconds),
        )
        report.adopted = sum(1 for s in adopted if s is not None and s.changed)

    async def _query_due(self, report: SweepReport) -> None:
        limit = max(
            1, int(self._settings.sweep_interval_seconds * self._settings.max_queries_per_second)
        )
        due = await self._database.transaction(ledger.due_queries, self._clock(), limit)
        for payment_id, checkout_id, accepted_at, status in due:
            if report.queried:
                await asyncio.sleep(self._min_gap)  # bounded rate: Spike Arrest is per app
                # Queries can be slow (Daraja timing out): renewed before each, the lease
                # cannot lapse mid-sweep and let a second process ask the same payments.
                if self._holder is not None and not await self._may_sweep():
                    return
            report.queried += 1
            try:
                outcome = await self._query_one(payment_id, checkout_id, accepted_at, status)
            except Exception:
                log.exception("reconciling payment %d failed", payment_id)
                continue
            report.settled += outcome == "settled"
            report.expired += outcome == "expired"

    async def _query_one(
        self, payment_id: int, checkout_id: str, accepted_at: datetime, status: PaymentStatus
    ) -> str:
        answer: QueryAnswer | None
        try:
            answer = await self._client.stk_query(checkout_id)
        except QueryFailed as exc:
            log.warning("STK query for payment %d failed: %s", payment_id, exc)
            answer = None
        self._metrics.query(_query_outcome(answer, checkout_id))
        if answer is not None and answer.result is not None:
            named = answer.result.checkout_request_id
            if named != checkout_id:
                # An answer about another transaction says nothing about this one (a test
                # double answering with random ids did this): a failed query, not an orphan.
                log.warning(
                    "STK query for payment %d (%s) was answered about %s; asking again later",
                    payment_id,
                    mask_checkout_id(checkout_id),
                    mask_checkout_id(named[:64]),
                )
                answer = None
        # An attempt already over (expired unconfirmed, or with a callback held for
        # confirmation) is only being asked about, late.
        record = self._record_answer if status.is_open else self._record_late_answer
        return await self._database.transaction(
            record, payment_id, checkout_id, accepted_at, answer, self._clock()
        )

    def _record_answer(
        self,
        conn: Connection,
        payment_id: int,
        checkout_id: str,
        accepted_at: datetime,
        answer: QueryAnswer | None,
        now: datetime,
    ) -> str:
        expires_at = accepted_at + timedelta(seconds=self._settings.expire_after_seconds)
        if answer is not None and answer.result is not None:
            return self._apply_answer(conn, payment_id, checkout_id, answer, now)
        if answer is not None:
            event = ledger.NewEvent(
                "query",
                json.dumps(answer.raw),
                checkout_id,
                EventStatus.IGNORED,
                "still being processed",
                payment_id,
            )
            ledger.insert_events(conn, [event], now)
        past_deadline = now >= expires_at
        if past_deadline and (answer is not None or now >= expires_at + GIVE_UP_AFTER):
            # Still "being processed" after the prompt's lifetime: it was never answered.
            # After GIVE_UP_AFTER of failed queries we still do not know: unconfirmed.
            confirmed = answer is not None
            if confirmed:
                held.refute_held(conn, payment_id, "still being processed when it expired", now)
            expired = ledger.expire_payment(conn, payment_id, now, confirmed=confirmed)
            if expired is not None and not confirmed:
                ledger.schedule_next_query(conn, payment_id, now + RETRY_AFTER_FAILED_QUERY)
            return "expired" if expired is not None else "unchanged"
        if past_deadline:
            # No answer from Daraja at all: expiring now could invite a second payment of
            # money that already moved. Keep asking.
            next_query = now + RETRY_AFTER_FAILED_QUERY
        else:
            interval = timedelta(seconds=self._settings.query_interval_seconds)
            next_query = min(now + interval, expires_at)
        ledger.schedule_next_query(conn, payment_id, next_query)
        return "pending"

    def _apply_answer(
        self,
        conn: Connection,
        payment_id: int,
        checkout_id: str,
        answer: QueryAnswer,
        now: datetime,
    ) -> str:
        assert answer.result is not None
        raw = json.dumps(answer.raw)
        if answer.result.succeeded:
            confirmed = held.confirm_held(conn, payment_id, now)
            if confirmed is not None:
                # The held callback carries the receipt the query answer lacks: it is what
                # pays the order. The answer is kept as what confirmed it.
                event_id, settled = confirmed
                note = f"confirms the callback held as event {event_id}"
                event = ledger.NewEvent(
                    "query", raw, checkout_id, EventStatus.APPLIED, note, payment_id
                )
                ledger.insert_events(conn, [event], now)
                return "settled" if settled is not None and settled.changed else "unchanged"
        else:
            code = answer.result.result_code
            held.refute_held(conn, payment_id, f"{code} {answer.result.result_desc}", now)
        plan = ledger.plan_results(conn, [answer.result], now)
        [mark] = plan.event_marks()
        ledger.insert_events(conn, [ledger.NewEvent("query", raw, checkout_id, *mark)], now)
        ledger.write_plan(conn, plan, now)
        [settled] = plan.settlements
        return "settled" if settled is not None and settled.changed else "unchanged"

    def _record_late_answer(
        self,
        conn: Connection,
        payment_id: int,
        checkout_id: str,
        accepted_at: datetime,
        answer: QueryAnswer | None,
        now: datetime,
    ) -> str:
        """An attempt that expired unconfirmed: a definite answer ends the asking (a
        success pays it after all; a failure changes nothing); otherwise ask again later,
        for a day."""
        if answer is not None and answer.result is not None:
            outcome = self._apply_answer(conn, payment_id, checkout_id, answer, now)
            ledger.stop_queries(conn, payment_id)
            return outcome
        if now >= accepted_at + KEEP_ASKING_UNCONFIRMED:
            ledger.stop_queries(conn, payment_id)
        else:
            ledger.schedule_next_query(conn, payment_id, now + RETRY_AFTER_FAILED_QUERY)
        return "unchanged"

    async def _expire_unqueryable(self, report: SweepReport) -> None:
        cutoff = self._clock() - timedelta(seconds=self._settings.expire_after_seconds)
        report.expired += await self._database.transaction(
            ledger.expire_unlinked, cutoff, self._clock()
        )


def _query_outcome(answer: QueryAnswer | None, checkout_id: str) -> str:
    """How duka_stk_queries_total counts an answer (one about another id: no answer)."""
    if answer is None:
        return "error"
    if answer.result is None:
        return "pending"
    if answer.result.checkout_request_id != checkout_id:
        return "error"
    return "succeeded" if answer.result.succeeded else "failed"
