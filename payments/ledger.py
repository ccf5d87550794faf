"""The payment ledger: the SQL that reads payments and writes what ``settlement`` decided.

``write_payment_changes`` and ``write_order_changes`` are the only code that assigns a
payment's or an order's status; both check the transition tables in ``states``. Every
function here runs inside the caller's transaction, so a result, the status changes
and the outbox messages it causes commit together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from payments.outbox import insert_outbox
from payments.results import MalformedCallback, ResultSource, StkResult, parse_callback
from payments.settlement import (
    UNCONFIRMED_CODE,
    ArrivedMoney,
    EventStatus,
    OutboxMessage,
    PaymentSnapshot,
    Settlement,
    expire,
    is_second_payment,
    recorded_elsewhere,
    settle,
)
from payments.states import (
    OrderStatus,
    PaymentStatus,
    check_order_transition,
    check_payment_transition,
)
from payments.unmatched import UnmatchedReason, record_unmatched
from storage import stock
from storage.schema import (
    OPEN_PAYMENT_STATUSES,
    orders,
    payment_events,
    payments,
)

log = logging.getLogger(__name__)

_SNAPSHOT_COLUMNS = (
    payments.c.id.label("payment_id"),
    payments.c.order_id,
    orders.c.customer_id,
    orders.c.reference.label("order_reference"),
    orders.c.status.label("order_status"),
    orders.c.total.label("order_total"),
    payments.c.status,
    payments.c.amount,
    payments.c.msisdn,
    payments.c.checkout_request_id,
    payments.c.result_code,
    payments.c.result_desc,
    payments.c.mpesa_receipt,
    payments.c.paid_amount,
    payments.c.paid_msisdn,
    payments.c.transaction_at,
    payments.c.settled_by,
    payments.c.own_callback_url,
)


# A push whose answer was lost is matched to a paid callback only within this window.
UNLINKED_MATCH_WINDOW = timedelta(hours=1)


EventMark = tuple[EventStatus, str, int | None]  # status, note, payment id


@dataclass(frozen=True, slots=True)
class NewEvent:
    source: str
    raw: str
    checkout_request_id: str | None
    status: EventStatus
    note: str = ""
    payment_id: int | None = None
    attempt_id: int | None = None  # the attempt its URL named
    source_ip: str | None = None
    needs_confirmation: bool = False  # paid only once an STK query confirms it


# On PostgreSQL a settling transaction locks the payment and its order, so two results for
# two attempts at one order (say a late callback and a query answer) are applied one after
# the other. SQLite has no row locks: BEGIN IMMEDIATE serializes all writers instead.
_LOCKED = (payments, orders)


# Rows become snapshots by position (a measurable saving on the callback path), so the
# column list and the dataclass must stay in the same order.
if [c.name for c in _SNAPSHOT_COLUMNS] != [f.name for f in fields(PaymentSnapshot)]:
    raise RuntimeError("_SNAPSHOT_COLUMNS must list PaymentSnapshot's fields in order")
_ORDER_STATUS_AT = [c.name for c in _SNAPSHOT_COLUMNS].index("order_status")
_STATUS_AT = [c.name for c in _SNAPSHOT_COLUMNS].index("status")


def _snapshot(row: Row[Any]) -> PaymentSnapshot:
    values = list(row)
    values[_ORDER_STATUS_AT] = OrderStatus(values[_ORDER_STATUS_AT])
    values[_STATUS_AT] = PaymentStatus(values[_STATUS_AT])
    return PaymentSnapshot(*values)


# The statements of the callback path are built once: constructing and cache-keying them
# per batch was a measurable share of its cost (see bench/).
def _snapshot_query() -> Any:
    return select(*_SNAPSHOT_COLUMNS).join(orders, orders.c.id == payments.c.order_id)


# Rows are locked in the order they come out: always (order, payment) by id, so that two
# batches locking overlapping payments (the same callbacks reaching two processes) take
# them in one order and cannot deadlock. A payment has one order, so this order is total.
# (The callback path's advisory locks, ``lock_checkout_ids``, are taken sorted as well;
# this keeps every path's row locks in one order, lookups by attempt id included.)
_LOCK_ORDER = (orders.c.id, payments.c.id)
_SNAPSHOTS_BY_CHECKOUT_ID = (
    _snapshot_query()
    .where(payments.c.checkout_request_id.in_(bindparam("ids", expanding=True)))
    .order_by(*_LOCK_ORDER)
    .with_for_update(of=_LOCKED)
)
_SNAPSHOT_BY_ID = (
    _snapshot_query().where(payments.c.id == bindparam("pid")).with_for_update(of=_LOCKED)
)
_INSERT_EVENTS = insert(payment_events)


# Taken in sorted order, one statement for the whole batch.
_LOCK_CHECKOUT_IDS = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(id, 0)) "
    "FROM (SELECT id FROM unnest(CAST(:ids AS text[])) AS id ORDER BY id) AS sorted_ids"
)


def lock_checkout_ids(conn: Connection, checkout_ids: Sequence[str]) -> None:
    """Serialize, on PostgreSQL, everything that links a CheckoutRequestID to an attempt.

    A callback can arrive while its push answer is being recorded. Under READ COMMITTED
    neither transaction sees the other's uncommitted row, so without this the callback
    is stored as an orphan *and* the push's adoption misses it. Holding a lock per id until
    commit makes the second one see the first. (SQLite's BEGIN IMMEDIATE already
    serializes all writers.)
    """
    if checkout_ids and conn.dialect.name == "postgresql":
        conn.execute(_LOCK_CHECKOUT_IDS, {"ids": sorted(set(checkout_ids))})


def snapshots_by_checkout_id(
    conn: Connection, checkout_ids: Iterable[str]
) -> dict[str, PaymentSnapshot]:
    """Lock (on PostgreSQL) and read the payments with these CheckoutRequestIDs."""
    ids = sorted(set(checkout_ids))
    if not ids:
        return {}
    lock_checkout_ids(conn, ids)
    rows = conn.execute(_SNAPSHOTS_BY_CHECKOUT_ID, {"ids": ids})
    return {row.checkout_request_id: _snapshot(row) for row in rows}


_SNAPSHOTS_BY_ID = (
    _snapshot_query()
    .where(payments.c.id.in_(bindparam("pids", expanding=True)))
    .order_by(*_LOCK_ORDER)
    .with_for_update(of=_LOCKED)
)


def snapshots_by_id(conn: Connection, payment_ids: Iterable[int]) -> dict[int, PaymentSnapshot]:
    ids = sorted(set(payment_ids))
    if not ids:
        return {}
    rows = conn.execute(_SNAPSHOTS_BY_ID, {"pids": ids})
    return {row.payment_id: _snapshot(row) for row in rows}


def snapshot_by_id(conn: Connection, payment_id: int) -> PaymentSnapshot | None:
    row = conn.execute(_SNAPSHOT_BY_ID, {"pid": payment_id}).first()
    return None if row is None else _snapshot(row)


def insert_events(conn: Connection, events: Sequence[NewEvent], now: datetime) -> None:
    """Store events in one multi-row statement (no RETURNING: SQLite would go row by row)."""
    if events:
        conn.execute(_INSERT_EVENTS, [_event_row(e, now) for e in events])


def insert_event(conn: Connection, event: NewEvent, now: datetime) -> int:
    """Store one event and return its id."""
    statement = insert(payment_events).returning(payment_events.c.id)
    return int((conn.execute(statement, _event_row(event, now))).scalar_one())


def _event_row(event: NewEvent, now: datetime) -> dict[str, Any]:
    return {
        "source": event.source,
        "received_at": now,
        "raw": event.raw,
        "checkout_request_id": event.checkout_request_id,
        "payment_id": event.payment_id,
        "status": str(event.status),
        "note": event.note[:500],
        "attempt_id": event.attempt_id,
        "source_ip": event.source_ip,
        "needs_confirmation": event.needs_confirmation,
    }


_MARK_EVENTS = (
    update(payment_events)
    .where(payment_events.c.id == bindparam("event_id"))
    .values(
        status=bindparam("new_status"),
        note=bindparam("new_note"),
        payment_id=bindparam("new_payment_id"),
    )
)


def mark_events(
    conn: Connection, marks: Sequence[tuple[int, EventStatus, str, int | None]]
) -> None:
    """Set (status, note, payment_id) on stored events, by id."""
    if not marks:
        return
    conn.execute(
        _MARK_EVENTS,
        [
            {"event_id": i, "new_status": str(s), "new_note": n[:500], "new_payment_id": p}
            for i, s, n, p in marks
        ],
    )


def note_unapplied(conn: Connection, event_id: int, note: str) -> None:
    """Say why a stored event is not applied yet, unless something applied it meanwhile."""
    conn.execute(
        update(payment_events)
        .where(payment_events.c.id == event_id)
        .where(payment_events.c.status == str(EventStatus.RECEIVED))
        .values(note=note[:500])
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """What a batch of results does, decided but not yet written."""

    settlements: list[Settlement | None]  # one per result; None: no attempt matches (yet)
    changes: list[tuple[PaymentSnapshot, PaymentSnapshot]]  # (as read, as to be stored)
    messages: list[OutboxMessage]
    # Paid results that can never be tied to one attempt (several fit): unmatched money.
    unmatched: dict[int, tuple[StkResult, UnmatchedReason]] = field(default_factory=dict)
    # Results refused for arriving at the wrong URL (see payments/callback_urls.py): why.
    forged: dict[int, str] = field(default_factory=dict)

    @property
    def held(self) -> list[int]:
        """Payments with a success callback held for confirmation: to be queried at once."""
        return [
            s.after.payment_id
            for s in self.settlements
            if s is not None and s.event_status is EventStatus.HELD
        ]

    def event_marks(self) -> list[EventMark]:
        """(status, note, payment id) for the event that carried each result."""
        marks: list[EventMark] = []
        for index, settlement in enumerate(self.settlements):
            if index in self.forged:
                marks.append((EventStatus.FORGED, self.forged[index], None))
            elif index in self.unmatched:
                marks.append((EventStatus.UNMATCHED, str(self.unmatched[index][1]), None))
            elif settlement is None:
                marks.append((EventStatus.ORPHAN, "no attempt with this id yet", None))
            else:
                marks.append(
                    (settlement.event_status, settlement.note, settlement.after.payment_id)
                )
        return marks


def plan_results(conn: Connection, results: Sequence[StkResult], now: datetime) -> Plan:
    """Read (and on PostgreSQL lock) the payments these results concern and decide.

    Several results for one payment (a duplicated callback in one batch) are decided one
    after the other against the updated state, so the second is a duplicate.
    """
    current = snapshots_by_checkout_id(conn, (r.checkout_request_id for r in results))
    by_attempt = snapshots_by_id(conn, (r.attempt_id for r in results if r.attempt_id))
    before = dict(current)
    unmatched: dict[int, tuple[StkResult, UnmatchedReason]] = {}
    forged: dict[int, str] = {}
    for index, result in enumerate(results):
        key = result.checkout_request_id
        if result.attempt_id is not None:
            # Its URL names the attempt: no guessing, even if the push answer was lost.
            attempt = by_attempt.get(result.attempt_id)
            if attempt is None:
                continue  # no such attempt (yet): kept as an orphan, with the id it named
            found = current.get(key)
            if (found is not None and found.payment_id != attempt.payment_id) or (
                attempt.checkout_request_id not in (None, key)
            ):
                forged[index] = "names another attempt's CheckoutRequestID than its URL's"
            elif found is None:
                before[key] = attempt
                current[key] = replace(attempt, checkout_request_id=key)
            continue
        found = current.get(key)
        if found is not None and found.own_callback_url and result.source is ResultSource.CALLBACK:
            forged[index] = "came to the bare callback URL, not to its attempt's own URL"
            continue
        if found is None and result.succeeded:
            unlinked, fits = _unlinked_attempt(conn, result, now)
            if unlinked is not None:
                before[key] = unlinked
                current[key] = replace(unlinked, checkout_request_id=key)
            elif fits > 1:
                # Several lost pushes fit: guessing could pay the wrong order. The merchant
                # is told now and attaches the money by hand (/match).
                unmatched[index] = (result, UnmatchedReason.SEVERAL_ATTEMPTS_FIT)
    order_status = {s.order_id: s.order_status for s in current.values()}
    holders = _receipt_holders(conn, [r.receipt for r in results if r.succeeded and r.receipt])
    settlements: list[Settlement | None] = []
    messages: list[OutboxMessage] = []
    for index, result in enumerate(results):
        snapshot = current.get(result.checkout_request_id)
        if snapshot is None or index in forged:
            settlements.append(None)
            continue
        if snapshot.order_status is not order_status[snapshot.order_id]:
            snapshot = replace(snapshot, order_status=order_status[snapshot.order_id])
        holder_id, holder_order = holders.get(result.receipt or "", (None, None))
        if is_second_payment(snapshot, result) and holder_id is None:
            # More money for an attempt already paid: it has no attempt of its own.
            unmatched[index] = (result, UnmatchedReason.SECOND_PAYMENT)
            settlements.append(None)
            continue
        if holder_id is None or holder_id == snapshot.payment_id:
            settlement = settle(snapshot, result)
        elif holder_order == snapshot.order_id:
            settlement = recorded_elsewhere(snapshot, result, holder_id)
        else:
            # One M-Pesa transaction cannot pay two orders' pushes: forged, or Daraja's
            # mistake. Its money is on record already; the query will tell this one's truth.
            note = f"receipt already belongs to payment {holder_id} of another order"
            settlement = Settlement(EventStatus.DUPLICATE, note, snapshot)
        settlements.append(settlement)
        current[result.checkout_request_id] = settlement.after
        order_status[snapshot.order_id] = settlement.after.order_status
        messages.extend(settlement.messages)
    changes = [(before[key], after) for key, after in current.items() if after is not before[key]]
    return Plan(settlements, changes, messages, unmatched, forged)


def _receipt_holders(conn: Connection, receipts: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(payment id, order id) already carrying each of these M-Pesa receipts, where one does."""
    if not receipts:
        return {}
    rows = conn.execute(_RECEIPT_HOLDERS, {"receipts": sorted(set(receipts))})
    return {row.mpesa_receipt: (row.id, row.order_id) for row in rows}


_RECEIPT_HOLDERS = select(payments.c.id, payments.c.order_id, payments.c.mpesa_receipt).where(
    payments.c.mpesa_receipt.in_(bindparam("receipts", expanding=True))
)


def write_plan(
    conn: Connection, plan: Plan, now: datetime, raws: Mapping[str, str] | None = None
) -> None:
    """Store what ``plan`` decided; ``raws`` (raw body by CheckoutRequestID) go with any
    unmatched money, for the merchant's audit trail."""
    write_payment_changes(conn, plan.changes, now)
    write_order_changes(conn, plan.changes, now)
    insert_outbox(conn, plan.messages, now)
    if held := plan.held:
        # Ask M-Pesa now: the customer is waiting, and CHECKING_NOTICE_AFTER is short.
        conn.execute(update(payments).where(payments.c.id.in_(held)).values(next_query_at=now))
    for result, reason in plan.unmatched.values():
        raw = (raws or {}).get(result.checkout_request_id, "")
        record_unmatched(conn, ArrivedMoney.from_stk(result), reason, raw, now)


def apply_results(
    conn: Connection, results: Sequence[tuple[int, StkResult]], now: datetime, raw: str = ""
) -> list[Settlement | None]:
    """Apply results already stored as events (event id, result), and mark those events."""
    plan = plan_results(conn, [result for _, result in results], now)
    raws = {result.checkout_request_id: raw for _, result in results} if raw else None
    write_plan(conn, plan, now, raws)
    marks = plan.event_marks()
    mark_events(conn, [(eid, *mark) for (eid, _), mark in zip(results, marks, strict=True)])
    return plan.settlements


def _unlinked_attempt(
    conn: Connection, result: StkResult, now: datetime
) -> tuple[PaymentSnapshot | None, int]:
    """The attempt a paid callback belongs to when its push answer was lost, and how many
    attempts fit (0, 1, or 2 meaning "several").

    After a push timeout we never learned the CheckoutRequestID, but the customer may
    still have paid. A success callback carries the phone and amount: if exactly one
    recent unlinked attempt matches both, the money is that attempt's; if several do,
    it stays an orphan for the merchant to see rather than be guessed. While another
    push to that phone is in flight (``created``), the callback may be that push's, whose
    answer will claim it by id: no guess is made until then.
    """
    if result.msisdn is None or result.amount is None:
        return None, 0
    in_flight = (
        select(payments.c.id)
        .where(payments.c.msisdn == result.msisdn)
        .where(payments.c.status == str(PaymentStatus.CREATED))
    )
    if (conn.execute(in_flight.limit(1))).first() is not None:
        return None, 0
    query = (
        _snapshot_query()
        .where(payments.c.checkout_request_id.is_(None))
        # Attempts with their own URL get their callbacks there, by id: never guessed.
        .where(payments.c.own_callback_url.is_(False))
        .where(payments.c.status.in_([str(PaymentStatus.UNKNOWN), str(PaymentStatus.EXPIRED)]))
        .where(payments.c.msisdn == result.msisdn)
        .where(payments.c.amount == int(result.amount))
        .where(payments.c.created_at >= now - UNLINKED_MATCH_WINDOW)
        .order_by(payments.c.id)
        .limit(2)
    )
    rows = (conn.execute(query.with_for_update(of=_LOCKED))).all()
    return (_snapshot(rows[0]) if len(rows) == 1 else None), len(rows)


_UPDATE_PAYMENTS = (
    update(payments)
    .where(payments.c.id == bindparam("pid"))
    # Redundant under the locks above; stops a stale write should they ever be missing.
    .where(payments.c.status == bindparam("expected_status"))
    .values(
        {
            column: bindparam(f"new_{column}")
            for column in (
                "status",
                "checkout_request_id",
                "result_code",
                "result_desc",
                "mpesa_receipt",
                "paid_amount",
                "paid_msisdn",
                "transaction_at",
                "settled_by",
                "updated_at",
            )
        }
    )
)
_UPDATE_ORDERS = (
    update(orders)
    .where(orders.c.id == bindparam("oid"))
    .where(orders.c.status == bindparam("expected_status"))
    .values(
        status=bindparam("new_status"),
        updated_at=bindparam("new_updated_at"),
        # Set when the order becomes paid, then kept: a refunded order was still paid that day.
        paid_at=func.coalesce(
            bindparam("new_paid_at", type_=orders.c.paid_at.type), orders.c.paid_at
        ),
    )
)


def write_payment_changes(
    conn: Connection,
    changes: Sequence[tuple[PaymentSnapshot, PaymentSnapshot]],
    now: datetime,
    **extra_columns: Any,
) -> None:
    """Store payments as ``after``; the only writer of ``payments.status``."""
    rows = []
    for before, after in changes:
        if after.status is not before.status:
            check_payment_transition(before.status, after.status)
        rows.append(
            {
                "pid": after.payment_id,
                "expected_status": str(before.status),
                "new_status": str(after.status),
                "new_checkout_request_id": after.checkout_request_id,
                "new_result_code": after.result_code,
                "new_result_desc": after.result_desc,
                "new_mpesa_receipt": after.mpesa_receipt,
                "new_paid_amount": after.paid_amount,
                "new_paid_msisdn": after.paid_msisdn,
                "new_transaction_at": after.transaction_at,
                "new_settled_by": after.settled_by,
                "new_updated_at": now,
                **{f"new_{k}": v for k, v in extra_columns.items()},
            }
        )
    if not rows:
        return
    statement = _UPDATE_PAYMENTS
    if extra_columns:
        statement = statement.values({k: bindparam(f"new_{k}") for k in extra_columns})
    conn.execute(statement, rows)


def write_order_changes(
    conn: Connection,
    changes: Sequence[tuple[PaymentSnapshot, PaymentSnapshot]],
    now: datetime,
) -> None:
    """Store the order statuses that the payment changes imply."""
    final: dict[int, tuple[OrderStatus, OrderStatus]] = {}  # order id -> (as read, to store)
    for before, after in changes:
        first = final.get(before.order_id, (before.order_status, before.order_status))[0]
        final[before.order_id] = (first, after.order_status)
    set_order_statuses(conn, [(oid, old, new) for oid, (old, new) in final.items()], now)


def set_order_statuses(
    conn: Connection, changes: Sequence[tuple[int, OrderStatus, OrderStatus]], now: datetime
) -> None:
    """(order id, as read, to store): the only writer of ``orders.status``."""
    rows = []
    changed: list[tuple[int, OrderStatus]] = []
    for order_id, old, new in changes:
        if old is new:
            continue
        check_order_transition(old, new)
        changed.append((order_id, new))
        rows.append(
            {
                "oid": order_id,
                "expected_status": str(old),
                "new_status": str(new),
                "new_updated_at": now,
                "new_paid_at": now if new is OrderStatus.PAID else None,
            }
        )
    if rows:
        conn.execute(_UPDATE_ORDERS, rows)
        # The order's stock goes with it: sold when paid, given back when cancelled (only
        # for orders that changed: a repeated "paid" must not take the goods again). An order
        # the shop refunds keeps its sale: the goods may be with the customer already, so
        # the merchant counts them back with /stock when they really are back.
        stock.sell(conn, [oid for oid, new in changed if new is OrderStatus.PAID])
        stock.release(conn, [oid for oid, new in changed if new is OrderStatus.CANCELLED])


def adopt_orphans(
    conn: Connection,
    now: datetime,
    *,
    checkout_ids: Sequence[str] | None = None,
    received_after: datetime | None = None,
    unmatched_after: timedelta | None = None,
    limit: int = 200,
) -> list[Settlement | None]:
    """Apply stored callbacks that arrived before their attempt was known, or not applied.

    Newest first, each in a savepoint: one event that cannot be applied, for whatever
    reason, is marked ``error`` and never blocks the others. With ``unmatched_after``
    (the reconciler's sweep), an orphan that old will never find its attempt (a push
    answer comes within seconds): a paid one becomes unmatched money for the merchant, a
    failed one is set aside; either way it is not read again. Events marked ``error`` are
    tried again meanwhile (a deadlock or a lock timeout passes); a paid one that still
    fails then becomes unmatched money too, so the merchant sees it.
    """
    statuses = [str(EventStatus.ORPHAN), str(EventStatus.RECEIVED)]
    wanted: ColumnElement[bool] = payment_events.c.status.in_(statuses)
    if unmatched_after is not None:
        retry_errors = (payment_events.c.status == str(EventStatus.ERROR)) & (
            payment_events.c.received_at >= now - 2 * unmatched_after
        )
        wanted = wanted | retry_errors
    query = (
        select(
            payment_events.c.id,
            payment_events.c.raw,
            payment_events.c.received_at,
            payment_events.c.checkout_request_id,
            payment_events.c.attempt_id,
            payment_events.c.needs_confirmation,
        )
        .where(payment_events.c.source == "callback")
        .where(wanted)
        .order_by(payment_events.c.id.desc())
        .limit(limit)
    )
    if checkout_ids is not None:
        query = query.where(payment_events.c.checkout_request_id.in_(checkout_ids))
    if received_after is not None:
        query = query.where(payment_events.c.received_at >= received_after)
    rows = conn.execute(query).all()
    # All of them up front, in sorted order, like every other transaction takes them.
    lock_checkout_ids(conn, [r.checkout_request_id for r in rows if r.checkout_request_id])
    settlements: list[Settlement | None] = []
    for row in rows:
        try:
            with conn.begin_nested():
                settlements.extend(_adopt_one(conn, row, now, unmatched_after))
        except Exception as exc:
            log.exception("stored callback %d cannot be applied; set aside", row.id)
            note = f"cannot be applied: {type(exc).__name__}"
            old = unmatched_after is not None and now - row.received_at >= unmatched_after
            if not (old and _keep_as_unmatched(conn, row.id, row.raw, note, now)):
                mark_events(conn, [(row.id, EventStatus.ERROR, note, None)])
    return settlements


def _keep_as_unmatched(conn: Connection, event_id: int, raw: str, note: str, now: datetime) -> bool:
    """A paid callback that keeps failing to apply: its money goes to the merchant as
    unmatched. False when there is no money in it (or even that fails)."""
    try:
        with conn.begin_nested():
            result = parse_callback(raw.encode())
            if not result.succeeded:
                return False
            money = ArrivedMoney.from_stk(result)
            record_unmatched(conn, money, UnmatchedReason.NOT_APPLIED, raw, now)
            mark_events(conn, [(event_id, EventStatus.UNMATCHED, note, None)])
            return True
    except Exception:
        log.exception("stored callback %d cannot be kept as unmatched money either", event_id)
        return False


def _adopt_one(
    conn: Connection, row: Any, now: datetime, unmatched_after: timedelta | None
) -> list[Settlement | None]:
    """Apply one stored callback ``row`` (a row of ``adopt_orphans``' query)."""
    event_id, raw, received_at = row.id, row.raw, row.received_at
    try:
        result = stored_result(raw, row.attempt_id, row.needs_confirmation)
    except MalformedCallback as exc:
        mark_events(conn, [(event_id, EventStatus.REJECTED, str(exc), None)])
        return []
    settlements = apply_results(conn, [(event_id, result)], now, raw)
    if settlements != [None] or unmatched_after is None or now - received_at < unmatched_after:
        return settlements
    if not result.succeeded:
        mark_events(conn, [(event_id, EventStatus.IGNORED, "no attempt with this id", None)])
        return settlements
    if unmatched_reason := _still_unmatched(conn, event_id):
        reason = UnmatchedReason.NO_PHONE if result.msisdn is None else unmatched_reason
        record_unmatched(conn, ArrivedMoney.from_stk(result), reason, raw, now)
        mark_events(conn, [(event_id, EventStatus.UNMATCHED, str(reason), None)])
    return settlements


def stored_result(raw: str, attempt_id: int | None, needs_confirmation: bool) -> StkResult:
    """A stored callback's result, with what its URL and its sender said about it."""
    result = parse_callback(raw.encode())
    return replace(result, attempt_id=attempt_id, needs_confirmation=needs_confirmation)


def _still_unmatched(conn: Connection, event_id: int) -> UnmatchedReason | None:
    """Why an orphan left as it was is unmatched (None: applying it just marked it)."""
    status = conn.execute(
        select(payment_events.c.status).where(payment_events.c.id == event_id)
    ).scalar_one()
    return UnmatchedReason.NO_ATTEMPT if status == EventStatus.ORPHAN else None


def expire_payment(
    conn: Connection, payment_id: int, now: datetime, *, confirmed: bool
) -> Settlement | None:
    """Expire an attempt that is still open; ``None`` if a result settled it meanwhile.
    ``confirmed``: Daraja itself said the prompt was never answered (see ``expire``)."""
    snapshot = snapshot_by_id(conn, payment_id)
    if snapshot is None or not snapshot.status.is_open:
        return None
    settlement = expire(snapshot, confirmed=confirmed)
    write_payment_changes(conn, [(snapshot, settlement.after)], now)
    insert_outbox(conn, settlement.messages, now)
    return settlement


def schedule_next_query(conn: Connection, payment_id: int, next_query_at: datetime) -> None:
    conn.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .values(query_count=payments.c.query_count + 1, next_query_at=next_query_at)
    )


def created_at(conn: Connection, payment_id: int) -> datetime:
    query = select(payments.c.created_at).where(payments.c.id == payment_id)
    return (conn.execute(query)).scalar_one()  # type: ignore[no-any-return]


def due_queries(
    conn: Connection, now: datetime, limit: int
) -> list[tuple[int, str, datetime, PaymentStatus]]:
    """Attempts whose next STK query is due: (payment id, CheckoutRequestID, accepted,
    status). Pending ones, those that expired unconfirmed (still asked for a while:
    Daraja may yet say that the money moved), and ended ones with a success callback held
    for confirmation (see ``payments.held``)."""
    pending = (payments.c.status == str(PaymentStatus.PENDING)) & or_(
        payments.c.next_query_at.is_(None), payments.c.next_query_at <= now
    )
    held = (
        select(payment_events.c.id)
        .where(payment_events.c.payment_id == payments.c.id)
        .where(payment_events.c.status == str(EventStatus.HELD))
        .exists()
    )
    ended_unsure = payments.c.status.in_(
        [str(PaymentStatus.EXPIRED), str(PaymentStatus.FAILED)]
    ) & ((payments.c.result_code == UNCONFIRMED_CODE) | held)
    unconfirmed = (
        ended_unsure
        & payments.c.checkout_request_id.is_not(None)
        & (payments.c.next_query_at <= now)
    )
    query = (
        select(
            payments.c.id,
            payments.c.checkout_request_id,
            payments.c.push_accepted_at,
            payments.c.status,
        )
        .where(or_(pending, unconfirmed))
        .order_by(payments.c.next_query_at)
        .limit(limit)
    )
    return [
        (row.id, row.checkout_request_id, row.push_accepted_at or now, PaymentStatus(row.status))
        for row in conn.execute(query)
    ]


def stop_queries(conn: Connection, payment_id: int) -> None:
    conn.execute(update(payments).where(payments.c.id == payment_id).values(next_query_at=None))


def expire_unlinked(conn: Connection, created_before: datetime, now: datetime) -> int:
    """Expire attempts that never got a CheckoutRequestID (push answer lost, or a crash
    mid-push): they cannot be queried. A late paid callback can still revive them."""
    query = (
        select(payments.c.id)
        .where(payments.c.status.in_([str(PaymentStatus.CREATED), str(PaymentStatus.UNKNOWN)]))
        .where(payments.c.created_at <= created_before)
    )
    expired = 0
    for (payment_id,) in conn.execute(query).all():
        # No CheckoutRequestID: M-Pesa can never be asked, so its outcome stays unconfirmed.
        expired += expire_payment(conn, payment_id, now, confirmed=False) is not None
    return expired


def cancel_order(conn: Connection, order_id: int, now: datetime) -> bool:
    """Cancel an order still awaiting payment with no attempt under way; False otherwise."""
    status = conn.execute(
        select(orders.c.status).where(orders.c.id == order_id).with_for_update()
    ).scalar_one_or_none()
    if status != OrderStatus.AWAITING_PAYMENT:
        return False
    open_attempt = conn.execute(
        select(payments.c.id)
        .where(payments.c.order_id == order_id)
        .where(payments.c.status.in_(OPEN_PAYMENT_STATUSES))
        .limit(1)
    ).first()
    if open_attempt is not None:
        return False
    set_order_statuses(conn, [(order_id, OrderStatus.AWAITING_PAYMENT, OrderStatus.CANCELLED)], now)
    return True
