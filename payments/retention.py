"""Retention: old rows that nothing needs any more are deleted, a little at a time.

What goes, and when (``[retention]`` in ``config.toml``; the defaults below):

- STK query answers (``payment_events``, source ``query``): 30 days. One is stored every
  ``query_interval_seconds`` per pending attempt, so they are most of that table.
- Raw callback bodies, C2B confirmations and push answers (every other source): 730 days.
  They are the audit trail of money: what M-Pesa said, and when.
- Outbox rows that are done (sent, withdrawn, expanded into per-merchant copies, or given
  up on): 90 days after they were sent (or queued).
- Inbound message ids (``inbound_messages``): 7 days; Meta stops redelivering a webhook
  long before that, and a message unhandled for an hour is never handled.

Never pruned, whatever their age:

- events still at work: ``received``, ``orphan`` and ``error`` ones are applied again by
  the reconciler; ``held`` ones wait for an STK query's confirmation;
- every event of a payment that is still open (created, pending, unknown), that has a held
  callback, whose order is in review (``needs_review``, ``refund_pending``), or that
  expired unconfirmed and is still on the review list; and every event whose
  CheckoutRequestID belongs to unmatched money that is still open;
- outbox rows not done yet (pending), and done rows of an order in review or with an open
  attempt. A done row's unique ``dedupe_key`` names a fact that cannot happen twice (a
  payment's one transition to paid, an audit row, a day's summary, a fulfilment step that
  only moves forward), so once its order has no open attempt, no code queues that key
  again and the row can go;
- tables that are records rather than traffic: orders, payments, unmatched money,
  review actions.

Each table is walked by id in windows of ``window`` ids and at most ``batch_size`` rows
are deleted per transaction, with a pause between transactions: on SQLite every write
goes through one writer thread, and the callback inbox's batches must never wait behind
a long delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, func, or_, select
from sqlalchemy.orm import aliased

from payments.outbox import OutboxStatus
from payments.review import UNCONFIRMED_LOOKBACK
from payments.settlement import UNCONFIRMED_CODE, EventStatus
from payments.states import OrderStatus
from payments.unmatched import UnmatchedStatus
from storage.engine import Database
from storage.leases import hold_lease, release_lease
from storage.schema import (
    OPEN_PAYMENT_STATUSES,
    inbound_messages,
    orders,
    outbox,
    payment_events,
    payments,
    unmatched_payments,
)

log = logging.getLogger(__name__)

LEASE = "retention"
BATCH_SIZE = 500  # rows deleted per transaction at most
WINDOW = 5000  # ids examined per transaction at most
PAUSE_SECONDS = 0.1  # between transactions: the callback writer goes first
INTERVAL_SECONDS = 3600.0  # between passes
# The first pass waits: start-up, and the callbacks queued while we were down, go first.
FIRST_PASS_AFTER_SECONDS = 60.0

# Events the reconciler or a query still works on: kept whatever their age.
_FINISHED_EVENTS = tuple(
    str(s)
    for s in (
        EventStatus.APPLIED,
        EventStatus.DUPLICATE,
        EventStatus.IGNORED,
        EventStatus.UNMATCHED,
        EventStatus.FORGED,
        EventStatus.REJECTED,
    )
)
_DONE_MESSAGES = tuple(
    str(s)
    for s in (
        OutboxStatus.SENT,
        OutboxStatus.WITHDRAWN,
        OutboxStatus.EXPANDED,
        OutboxStatus.FAILED,
    )
)
# The merchant still decides about these orders: their trail stays.
_IN_REVIEW = (str(OrderStatus.NEEDS_REVIEW), str(OrderStatus.REFUND_PENDING))


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How many days each kind of row is kept (``[retention]``)."""

    query_answers_days: int = 30
    sent_messages_days: int = 90
    inbound_ids_days: int = 7
    callback_bodies_days: int = 730


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these may go (if nothing else keeps them)."""

    query_answers: datetime
    callback_bodies: datetime
    sent_messages: datetime
    inbound_ids: datetime
    unconfirmed_review: datetime  # unconfirmed attempts newer than this are on /review

    @classmethod
    def at(cls, settings: RetentionSettings, now: datetime) -> Cutoffs:
        return cls(
            query_answers=now - timedelta(days=settings.query_answers_days),
            callback_bodies=now - timedelta(days=settings.callback_bodies_days),
            sent_messages=now - timedelta(days=settings.sent_messages_days),
            inbound_ids=now - timedelta(days=settings.inbound_ids_days),
            unconfirmed_review=now - UNCONFIRMED_LOOKBACK,
        )


def prunable_events(cut: Cutoffs) -> ColumnElement[bool]:
    """Finished events past their age whose payment, order and money are settled."""
    held = aliased(payment_events)
    still_needed = (
        select(payments.c.id)
        .join(orders, orders.c.id == payments.c.order_id)
        .where(payments.c.id == payment_events.c.payment_id)
        .where(
            or_(
                payments.c.status.in_(OPEN_PAYMENT_STATUSES),
                orders.c.status.in_(_IN_REVIEW),
                and_(
                    payments.c.result_code == UNCONFIRMED_CODE,
                    orders.c.status == str(OrderStatus.AWAITING_PAYMENT),
                    payments.c.created_at >= cut.unconfirmed_review,
                ),
                select(held.c.id)
                .where(held.c.payment_id == payments.c.id)
                .where(held.c.status == str(EventStatus.HELD))
                .exists(),
            )
        )
    )
    open_money = (
        select(unmatched_payments.c.id)
        .where(unmatched_payments.c.status == str(UnmatchedStatus.OPEN))
        .where(unmatched_payments.c.checkout_request_id == payment_events.c.checkout_request_id)
    )
    old = or_(
        and_(payment_events.c.source == "query", payment_events.c.received_at < cut.query_answers),
        # Any other source is money's audit trail, kept the longer time.
        and_(
            payment_events.c.source != "query",
            payment_events.c.received_at < cut.callback_bodies,
        ),
    )
    return and_(
        payment_events.c.status.in_(_FINISHED_EVENTS),
        old,
        ~still_needed.exists(),
        ~open_money.exists(),
    )


def prunable_messages(cut: Cutoffs) -> ColumnElement[bool]:
    """Done outbox rows past their age whose order (if any) has nothing open."""
    open_attempt = (
        select(payments.c.id)
        .where(payments.c.order_id == orders.c.id)
        .where(payments.c.status.in_(OPEN_PAYMENT_STATUSES))
        .exists()
    )
    busy_order = (
        select(orders.c.id)
        .where(orders.c.id == outbox.c.order_id)
        .where(or_(orders.c.status.in_(_IN_REVIEW), open_attempt))
    )
    return and_(
        outbox.c.status.in_(_DONE_MESSAGES),
        outbox.c.created_at < cut.sent_messages,
        or_(outbox.c.sent_at.is_(None), outbox.c.sent_at < cut.sent_messages),
        ~busy_order.exists(),
    )


def prunable_inbound(cut: Cutoffs) -> ColumnElement[bool]:
    """Inbound ids past their age; an unhandled one is stale after an hour anyway
    (``bot.channels.whatsapp.RESUME_WINDOW``)."""
    return inbound_messages.c.received_at < cut.inbound_ids


# Per table, what may go: checked again in every transaction, so a row that became
# needed meanwhile stays.
RULES: tuple[tuple[Table, Callable[[Cutoffs], ColumnElement[bool]]], ...] = (
    (payment_events, prunable_events),
    (outbox, prunable_messages),
    (inbound_messages, prunable_inbound),
)


def id_range(conn: Connection, table: Table) -> tuple[int, int]:
    """The lowest and highest id in ``table`` ((0, 0) when it is empty)."""
    low, high = conn.execute(select(func.min(table.c.id), func.max(table.c.id))).one()
    return (low or 0, high or 0)


def delete_batch(
    conn: Connection,
    table: Table,
    condition: ColumnElement[bool],
    after_id: int,
    upto_id: int,
    limit: int,
) -> tuple[int, int]:
    """Delete at most ``limit`` rows matching ``condition`` with ids in (after_id, upto_id]:
    (rows deleted, the id up to which the range is done)."""
    ids = list(
        conn.execute(
            select(table.c.id)
            .where(table.c.id > after_id, table.c.id <= upto_id, condition)
            .order_by(table.c.id)
            .limit(limit)
        ).scalars()
    )
    if ids:
        conn.execute(delete(table).where(table.c.id.in_(ids)))
    # A full batch may have left matches in the range: go on right after the last one.
    return len(ids), ids[-1] if len(ids) == limit else upto_id


@dataclass
class PruneReport:
    deleted: dict[str, int] = field(default_factory=dict)  # by table
    batches: list[int] = field(default_factory=list)  # rows deleted by each transaction


class Pruner:
    """Deletes what retention allows, in small transactions; ``prune`` is one pass."""

    def __init__(
        self,
        database: Database,
        settings: RetentionSettings,
        clock: Callable[[], datetime],
        *,
        batch_size: int = BATCH_SIZE,
        window: int = WINDOW,
        pause_seconds: float = PAUSE_SECONDS,
        interval_seconds: float = INTERVAL_SECONDS,
        first_pass_after_seconds: float = FIRST_PASS_AFTER_SECONDS,
        holder: str | None = None,
    ) -> None:
        self._db = database
        # Several processes: only the lease holder prunes (storage/leases.py); the lease
        # outlives one interval, so the holder keeps it from one pass to the next.
        self._holder = holder
        self._settings = settings
        self._clock = clock
        self._batch_size = batch_size
        self._window = max(window, batch_size)
        self._pause = pause_seconds
        self._interval = interval_seconds
        self._first_pass_after = first_pass_after_seconds
        self._stopping = asyncio.Event()

    async def prune(self) -> PruneReport:
        report = PruneReport()
        cut = Cutoffs.at(self._settings, self._clock())
        for table, rule in RULES:
            report.deleted[table.name] = await self._prune_table(table, rule(cut), report)
        return report

    async def _prune_table(
        self, table: Table, condition: ColumnElement[bool], report: PruneReport
    ) -> int:
        low, high = await self._db.transaction(id_range, table)
        done, total = low - 1, 0
        while done < high and not self._stopping.is_set():
            upto = min(done + self._window, high)
            deleted, done = await self._db.transaction(
                delete_batch, table, condition, done, upto, self._batch_size
            )
            report.batches.append(deleted)
            total += deleted
            await asyncio.sleep(self._pause)
        return total

    async def run_forever(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._first_pass_after)
        while not self._stopping.is_set():
            try:
                if not await self._holds_lease():
                    report = PruneReport()
                else:
                    report = await self.prune()
                if any(report.deleted.values()):
                    log.info("retention: deleted %s", report.deleted)
            except Exception:
                log.exception("retention pass failed; trying again at the next one")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def _holds_lease(self) -> bool:
        if self._holder is None:
            return True
        term = timedelta(seconds=self._interval * 1.5)
        return bool(
            await self._db.transaction(hold_lease, LEASE, self._holder, self._clock(), term)
        )

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End after the transaction under way (it is small, and finishes anyway), and give
        the lease up: the next process prunes at its next pass, not hours later."""
        self._stopping.set()
        await task
        if self._holder is not None:
            with contextlib.suppress(Exception):
                await self._db.transaction(release_lease, LEASE, self._holder)
