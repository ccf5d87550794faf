"""Durable, batched intake of Daraja callbacks (group commit).

Each callback's raw body must be stored, and its result applied, before Daraja gets
its answer. Doing that in one transaction per request caps throughput at SQLite's
commit rate, so one writer task takes every callback waiting in the queue, stores
and applies them in a single transaction, and then answers all their requests.

If applying the batch fails, each callback is stored in a transaction of its own
(status ``received``) and then applied on its own, so one bad callback cannot take
others down with it; the reconciler retries whatever is left unapplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from payments import ledger
from payments.metrics import Metrics
from payments.phone import mask_checkout_id, mask_msisdn
from payments.results import StkResult
from payments.settlement import EventStatus, PaymentSnapshot
from storage.engine import Database

log = logging.getLogger(__name__)


class InboxUnavailable(Exception):
    """The callback could not be stored (the database is down); the sender should retry."""


@dataclass(slots=True)
class _Item:
    raw: str
    result: StkResult | None
    rejection: str | None
    source_ip: str | None = None
    refused_as: EventStatus = EventStatus.REJECTED  # for a body not applied at all
    status: EventStatus = EventStatus.RECEIVED  # what storing (and applying) it did
    payment: PaymentSnapshot | None = None  # the payment it concerned, for the log line
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def event(self, mark: ledger.EventMark | None = None) -> ledger.NewEvent:
        """The stored form; ``mark`` is what applying it did (None: not applied yet)."""
        if self.result is None:
            return ledger.NewEvent(
                "callback",
                self.raw,
                None,
                self.refused_as,
                note=self.rejection or "",
                source_ip=self.source_ip,
            )
        status, note, payment_id = mark or (EventStatus.RECEIVED, "", None)
        self.status = status
        return ledger.NewEvent(
            "callback",
            self.raw,
            self.result.checkout_request_id,
            status,
            note,
            payment_id,
            attempt_id=self.result.attempt_id,
            source_ip=self.source_ip,
            needs_confirmation=self.result.needs_confirmation,
        )


def store_and_apply(conn: Connection, batch: Sequence[_Item], now: datetime) -> None:
    """One transaction: the batch's raw bodies, what their results change, their messages."""
    results = [item.result for item in batch if item.result is not None]
    plan = ledger.plan_results(conn, results, now)
    settlements = iter(plan.settlements)
    for item in batch:
        if item.result is not None:
            settlement = next(settlements)
            item.payment = None if settlement is None else settlement.after
    marks = iter(plan.event_marks())
    events = [item.event(next(marks) if item.result else None) for item in batch]
    # The raw bodies are the first rows this transaction writes.
    ledger.insert_events(conn, events, now)
    raws = {item.result.checkout_request_id: item.raw for item in batch if item.result}
    ledger.write_plan(conn, plan, now, raws)


class CallbackInbox:
    def __init__(
        self,
        database: Database,
        clock: Callable[[], datetime],
        max_batch: int = 500,
        on_applied: Callable[[], None] | None = None,
        on_held: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._database = database
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._on_applied = on_applied  # e.g. wake the outbox dispatcher
        self._on_held = on_held  # e.g. wake the reconciler, to confirm a held callback now
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(
        self,
        raw: str,
        result: StkResult | None,
        rejection: str | None = None,
        source_ip: str | None = None,
        refused_as: EventStatus = EventStatus.REJECTED,
    ) -> EventStatus:
        """Return once the callback is durably stored (and, normally, applied): what it did
        (``forged``: it came to a URL that is not its attempt's)."""
        if not self.running:
            raise InboxUnavailable("the callback inbox is not running")
        item = _Item(raw, result, rejection, source_ip, refused_as)
        self._queue.put_nowait(item)  # unbounded: the writer drains everything each turn
        await asyncio.shield(item.done)  # a dropped client connection must not lose our write
        self._metrics.callback(item.refused_as if result is None else item.status)
        if result is not None:
            _log_outcome(item.status, result, item.payment)
        return item.status

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callback-inbox")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _store_batch(self, batch: list[_Item]) -> None:
        try:
            await self._database.transaction(store_and_apply, batch, self._clock())
        except Exception:
            log.exception(
                "applying a batch of %d callbacks failed; storing them one by one", len(batch)
            )
            await self._store_separately(batch)
            return
        for item in batch:
            _resolve(item.done)
        if self._on_applied is not None:
            self._on_applied()
        if self._on_held is not None and any(i.status is EventStatus.HELD for i in batch):
            self._on_held()

    async def _store_separately(self, batch: list[_Item]) -> None:
        """One transaction per callback, so one that cannot be stored fails alone."""
        for item in batch:
            try:
                event_id = await self._database.transaction(
                    ledger.insert_event, item.event(), self._clock()
                )
            except Exception as exc:
                log.exception("could not store a callback")
                item.done.set_exception(InboxUnavailable(type(exc).__name__))
                continue
            _resolve(item.done)  # stored: Daraja can be told "accepted"
            if item.result is not None:
                await self._apply_one(event_id, item.result, item.raw)

    async def _apply_one(self, event_id: int, result: StkResult, item_raw: str) -> None:
        try:
            await self._database.transaction(
                ledger.apply_results, [(event_id, result)], self._clock(), item_raw
            )
        except Exception as exc:
            # Left as "received" with the reason: the reconciler tries it again.
            log.exception("callback event %d could not be applied", event_id)
            note = f"not applied yet: {type(exc).__name__}"
            with contextlib.suppress(Exception):
                await self._database.transaction(ledger.note_unapplied, event_id, note)


def _log_outcome(status: EventStatus, result: StkResult, payment: PaymentSnapshot | None) -> None:
    """One line per callback stored: what it did, to which order, and Daraja's words."""
    level = logging.INFO if status in _ROUTINE else logging.WARNING
    log.log(
        level,
        "callback %s: order %s, %s, checkout %s, ResultCode %s (%s)%s",
        status.value,
        payment.order_reference if payment else "-",
        mask_msisdn(payment.msisdn if payment else result.msisdn),
        mask_checkout_id(result.checkout_request_id),
        result.result_code,
        result.result_desc,
        f", receipt {result.receipt}" if result.receipt else "",
    )


_ROUTINE = frozenset(
    {EventStatus.APPLIED, EventStatus.DUPLICATE, EventStatus.HELD, EventStatus.IGNORED}
)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
