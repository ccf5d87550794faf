"""The merchant's daily summary: the day's ``/report``, sent at the shop's closing time.

``[shop] daily_summary_at = "20:00"`` (Nairobi time) turns it on. Three parts:

* ``due_day`` decides, with no I/O, which day's summary is due now, if any;
* ``queue_summary`` writes that summary to the outbox in one transaction. Its dedupe key
  is the day, and the row stays after the dispatcher copies it to every merchant chat
  (``bot.notifications``), so the row itself records that the day's summary was queued:
  a restart at 20:05 finds it and queues nothing, and a crash before the commit leaves
  nothing half done;
* ``DailySummary`` asks every ``CHECK_SECONDS`` while ``duka serve`` runs.

A summary missed at closing time (Duka was down) goes out late the same day, which is
what a merchant expects; after midnight yesterday's is left to ``/report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import date, datetime, time

from sqlalchemy import Connection, select

from bot import reports
from payments.credentials import NAIROBI
from payments.outbox import insert_outbox
from payments.settlement import MessageKind, OutboxMessage
from storage.engine import Database
from storage.schema import outbox

log = logging.getLogger(__name__)
# How late after closing time the summary may go out; the check itself costs nothing
# (no query) outside the minutes between closing time and the summary being queued.
CHECK_SECONDS = 30.0


def due_day(now: datetime, at: time, last_queued: date | None) -> date | None:
    """The Nairobi day whose summary should be queued at ``now``, or None: today's, once
    its closing time ``at`` has passed and unless ``last_queued`` is today (or later, if
    the clock went back)."""
    local = now.astimezone(NAIROBI)
    today = local.date()
    if local.time() < at:
        return None
    if last_queued is not None and last_queued >= today:
        return None
    return today


def summary_message(day: date, sold: list[reports.PaidOrder]) -> OutboxMessage:
    """The merchant message for ``day``: the ``/report`` text, and the numbers alone for
    a template (WhatsApp, outside the 24-hour window)."""
    period = reports.Period(day, day)
    return OutboxMessage(
        MessageKind.DAILY_SUMMARY,
        payment_id=None,
        order_id=None,
        customer_id=None,
        payload={
            "date": day.isoformat(),
            "count": len(sold),
            "total": sum(order.total for order in sold),
            "report": reports.report_text(period, sold),
        },
        subject=_subject(day),
    )


def summary_key(day: date) -> str:
    """The dedupe key of ``day``'s summary: one per day, whoever queues it."""
    return OutboxMessage(MessageKind.DAILY_SUMMARY, None, None, None, {}, _subject(day)).dedupe_key


def _subject(day: date) -> str:
    return f"daily_summary:{day.isoformat()}"


def queue_summary(conn: Connection, day: date, now: datetime) -> bool:
    """Queue ``day``'s summary, as the report stands at ``now``; False when it was queued
    already (then nothing is written)."""
    found = conn.execute(select(outbox.c.id).where(outbox.c.dedupe_key == summary_key(day)))
    if found.first() is not None:
        return False
    sold = reports.paid_orders(conn, reports.Period(day, day))
    # The unique dedupe key still keeps a second writer from doubling it.
    insert_outbox(conn, [summary_message(day, sold)], now)
    return True


class DailySummary:
    """Queues the summary once a day at ``at`` (Nairobi time); ``tick`` is one check."""

    def __init__(
        self,
        database: Database,
        at: time,
        clock: Callable[[], datetime],
        on_queued: Callable[[], None] | None = None,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self._db = database
        self._at = at
        self._clock = clock
        self._on_queued = on_queued  # e.g. wake the outbox dispatcher
        self._check_seconds = check_seconds
        # Only saves queries: the outbox row is what counts (a restart starts with None).
        self._last_queued: date | None = None
        self._stopping = asyncio.Event()

    async def tick(self) -> date | None:
        """Queue the summary if it is due; the day queued by this check, or None."""
        now = self._clock()
        day = due_day(now, self._at, self._last_queued)
        if day is None:
            return None
        queued = await self._db.transaction(queue_summary, day, now)
        self._last_queued = day
        if not queued:
            return None
        log.info("daily summary for %s queued", day)
        if self._on_queued is not None:
            self._on_queued()
        return day

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("daily summary check failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._check_seconds)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End after the check under way (its transaction is short, and finishes anyway)."""
        self._stopping.set()
        await task
