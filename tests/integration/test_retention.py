"""Retention on a real database (SQLite file; PostgreSQL where reachable): exactly the old
rows nothing needs go; what an open attempt, a review, open unmatched money or a held
callback needs stays; under a steady load the tables stop growing; deletes come in small
transactions. The clock is fixed, not waited on."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Table, func, insert, select

from payments.outbox import OutboxStatus
from payments.retention import Pruner, RetentionSettings
from payments.settlement import EventStatus
from payments.states import OrderStatus, PaymentStatus
from payments.unmatched import UnmatchedStatus
from storage.engine import Database
from storage.orders import get_or_create_customer
from storage.schema import (
    inbound_messages,
    orders,
    outbox,
    payment_events,
    payments,
    unmatched_payments,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def days_ago(days: float, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def pruner(db: Database, clock: Clock, settings: RetentionSettings | None = None) -> Pruner:
    return Pruner(db, settings or RetentionSettings(), clock, pause_seconds=0)


class Seed:
    """Rows written straight into the tables, as the code paths that own them leave them."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.customer = get_or_create_customer(conn, "telegram", "7001", "Wanjiru", NOW).id
        self.count = int(conn.execute(select(func.count()).select_from(orders)).scalar_one())

    def _insert(self, table: Table, **values: object) -> int:
        return int(
            self.conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
        )

    def order(self, status: OrderStatus, at: datetime) -> int:
        self.count += 1
        return self._insert(
            orders,
            reference=f"T{self.count}",
            customer_id=self.customer,
            status=str(status),
            total=100,
            created_at=at,
            updated_at=at,
        )

    def payment(
        self, order_id: int, status: PaymentStatus, at: datetime, result_code: str | None = None
    ) -> tuple[int, str]:
        checkout_id = f"ws_CO_{self.count}_{secrets.token_hex(4)}"
        payment_id = self._insert(
            payments,
            order_id=order_id,
            status=str(status),
            msisdn="254712345678",
            amount=100,
            checkout_request_id=checkout_id,
            result_code=result_code,
            created_at=at,
            updated_at=at,
        )
        return payment_id, checkout_id

    def event(
        self,
        source: str,
        status: EventStatus,
        at: datetime,
        payment_id: int | None = None,
        checkout_id: str | None = None,
    ) -> int:
        return self._insert(
            payment_events,
            source=source,
            received_at=at,
            raw="{}",
            checkout_request_id=checkout_id,
            payment_id=payment_id,
            status=str(status),
        )

    def message(self, status: OutboxStatus, at: datetime, order_id: int | None = None) -> int:
        return self._insert(
            outbox,
            dedupe_key=f"test:{secrets.token_hex(6)}",
            kind="payment_paid",
            audience="customer",
            order_id=order_id,
            payload="{}",
            status=str(status),
            next_attempt_at=at,
            created_at=at,
            sent_at=at if status is OutboxStatus.SENT else None,
        )

    def inbound(self, at: datetime, *, handled: bool = True) -> int:
        return self._insert(
            inbound_messages,
            channel="whatsapp",
            message_id=f"wamid.{secrets.token_hex(8)}",
            received_at=at,
            handled_at=at if handled else None,
        )

    def unmatched(self, checkout_id: str, status: UnmatchedStatus, at: datetime) -> int:
        return self._insert(
            unmatched_payments,
            source="stk_callback",
            receipt=f"R{secrets.token_hex(4).upper()}",
            amount=100,
            amount_exact="100.00",
            masked_phone="07XX XXX 678",
            checkout_request_id=checkout_id,
            reason="no_attempt",
            raw="{}",
            received_at=at,
            status=str(status),
        )


@dataclass
class Expected:
    gone: dict[str, set[int]]
    kept: dict[str, set[int]]


def seed_every_case(conn: Connection) -> Expected:
    s = Seed(conn)
    gone: dict[str, set[int]] = {
        "payment_events": set(),
        "outbox": set(),
        "inbound_messages": set(),
    }
    kept: dict[str, set[int]] = {
        "payment_events": set(),
        "outbox": set(),
        "inbound_messages": set(),
    }
    events, messages, inbound = "payment_events", "outbox", "inbound_messages"
    old, ancient = days_ago(40), days_ago(800)

    # A paid order: query answers go after 30 days, its callback and push after 730.
    paid = s.order(OrderStatus.PAID, ancient)
    pid, cid = s.payment(paid, PaymentStatus.PAID, ancient)
    gone[events] |= {
        s.event("query", EventStatus.APPLIED, old, pid, cid),
        s.event("callback", EventStatus.APPLIED, ancient, pid, cid),
        s.event("push", EventStatus.APPLIED, ancient, pid, cid),
        s.event("callback", EventStatus.DUPLICATE, ancient, pid, cid),
    }
    kept[events] |= {
        s.event("query", EventStatus.IGNORED, days_ago(10), pid, cid),
        s.event("callback", EventStatus.APPLIED, old, pid, cid),  # the audit trail
    }
    gone[messages] |= {s.message(OutboxStatus.SENT, days_ago(100), paid)}
    kept[messages] |= {s.message(OutboxStatus.SENT, days_ago(10), paid)}

    # A payment still pending: everything of it stays, however old.
    waiting = s.order(OrderStatus.AWAITING_PAYMENT, ancient)
    open_id, open_cid = s.payment(waiting, PaymentStatus.PENDING, ancient)
    kept[events] |= {
        s.event("query", EventStatus.IGNORED, old, open_id, open_cid),
        s.event("push", EventStatus.APPLIED, ancient, open_id, open_cid),
    }
    kept[messages] |= {s.message(OutboxStatus.SENT, days_ago(100), waiting)}

    # An order in review, and one the shop is refunding: their trail stays.
    for status in (OrderStatus.NEEDS_REVIEW, OrderStatus.REFUND_PENDING):
        review = s.order(status, ancient)
        rid, rcid = s.payment(review, PaymentStatus.PAID, ancient)
        kept[events] |= {
            s.event("query", EventStatus.APPLIED, old, rid, rcid),
            s.event("callback", EventStatus.APPLIED, ancient, rid, rcid),
        }
        kept[messages] |= {s.message(OutboxStatus.SENT, days_ago(100), review)}

    # A failed attempt with a success callback held for confirmation.
    held_order = s.order(OrderStatus.AWAITING_PAYMENT, ancient)
    hid, hcid = s.payment(held_order, PaymentStatus.FAILED, ancient)
    kept[events] |= {
        s.event("callback", EventStatus.HELD, ancient, hid, hcid),
        s.event("query", EventStatus.IGNORED, old, hid, hcid),
    }

    # An attempt that expired unconfirmed 5 days ago is on /review; one from 40 days is not.
    recent = s.order(OrderStatus.AWAITING_PAYMENT, days_ago(5))
    uid, ucid = s.payment(recent, PaymentStatus.EXPIRED, days_ago(5), "unconfirmed")
    kept[events] |= {s.event("query", EventStatus.IGNORED, days_ago(4), uid, ucid)}
    stale = s.order(OrderStatus.AWAITING_PAYMENT, days_ago(60))
    sid, scid = s.payment(stale, PaymentStatus.EXPIRED, days_ago(60), "unconfirmed")
    gone[events] |= {s.event("query", EventStatus.IGNORED, days_ago(59), sid, scid)}
    gone[messages] |= {s.message(OutboxStatus.SENT, days_ago(100), stale)}

    # Callbacks still at work stay whatever their age; finished ones with no attempt go.
    kept[events] |= {
        s.event("callback", status, ancient, checkout_id=f"ws_CO_{status}")
        for status in (EventStatus.ORPHAN, EventStatus.RECEIVED, EventStatus.ERROR)
    }
    gone[events] |= {
        s.event("callback", EventStatus.FORGED, ancient),
        s.event("c2b", EventStatus.REJECTED, ancient),
    }

    # Unmatched money: the event stays while the money is open.
    s.unmatched("ws_CO_open_money", UnmatchedStatus.OPEN, ancient)
    s.unmatched("ws_CO_matched_money", UnmatchedStatus.MATCHED, ancient)
    kept[events] |= {
        s.event("callback", EventStatus.UNMATCHED, ancient, checkout_id="ws_CO_open_money")
    }
    gone[events] |= {
        s.event("callback", EventStatus.UNMATCHED, ancient, checkout_id="ws_CO_matched_money")
    }

    # Outbox rows not sent yet stay; done ones tied to no order (a daily summary) go.
    kept[messages] |= {
        s.message(OutboxStatus.PENDING, days_ago(100)),
        s.message(OutboxStatus.PENDING, days_ago(100), paid),
    }
    gone[messages] |= {
        s.message(OutboxStatus.SENT, days_ago(100)),
        s.message(OutboxStatus.WITHDRAWN, days_ago(100), paid),
        s.message(OutboxStatus.FAILED, days_ago(100)),
    }

    gone[inbound] |= {s.inbound(days_ago(8)), s.inbound(days_ago(8), handled=False)}
    kept[inbound] |= {s.inbound(days_ago(6)), s.inbound(NOW)}
    return Expected(gone, kept)


def ids(conn: Connection, table: Table) -> set[int]:
    return set(conn.execute(select(table.c.id)).scalars())


async def test_prunes_exactly_the_old_rows_nothing_needs(database: Database) -> None:
    """Old query answers, callbacks past two years, old done messages and old inbound ids
    go; what an open attempt, a review, open money or a held callback needs stays."""
    expected = await database.transaction(seed_every_case)
    report = await pruner(database, Clock(NOW)).prune()
    for table in (payment_events, outbox, inbound_messages):
        left = await database.transaction(ids, table)
        assert left == expected.kept[table.name], table.name
        assert report.deleted[table.name] == len(expected.gone[table.name])


def one_day_of_traffic(conn: Connection, now: datetime, pending: tuple[int, str]) -> None:
    """A day's steady load: a paid order with its queries, callback and push, its messages,
    some chat messages; and one more query answer for an attempt that never ends."""
    s = Seed(conn)
    order = s.order(OrderStatus.PAID, now)
    pid, cid = s.payment(order, PaymentStatus.PAID, now)
    for _ in range(4):
        s.event("query", EventStatus.IGNORED, now, pid, cid)
    s.event("push", EventStatus.APPLIED, now, pid, cid)
    s.event("callback", EventStatus.APPLIED, now, pid, cid)
    s.message(OutboxStatus.SENT, now, order)
    s.message(OutboxStatus.SENT, now)
    for _ in range(3):
        s.inbound(now)
    s.event("query", EventStatus.IGNORED, now, *pending)


def counts(conn: Connection, *, besides_payment: int = 0) -> tuple[int, ...]:
    """Rows in each table; for ``payment_events``, those not of ``besides_payment``."""
    others = payment_events.c.payment_id.is_(None) | (
        payment_events.c.payment_id != besides_payment
    )
    return (
        int(conn.execute(select(func.count()).where(others)).scalar_one()),
        *(
            int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (outbox, inbound_messages)
        ),
    )


def open_attempt(conn: Connection, now: datetime) -> tuple[int, str]:
    s = Seed(conn)
    return s.payment(s.order(OrderStatus.AWAITING_PAYMENT, now), PaymentStatus.PENDING, now)


async def test_tables_stop_growing_under_a_steady_load(database: Database) -> None:
    """Day after day of the same traffic, pruned daily: once the longest retention has
    passed the row counts stay put, and the open attempt keeps every one of its events."""
    settings = RetentionSettings(
        query_answers_days=2, sent_messages_days=3, inbound_ids_days=1, callback_bodies_days=5
    )
    clock = Clock(NOW)
    pending = await database.transaction(open_attempt, clock.now)
    history = []
    for _ in range(12):
        await database.transaction(one_day_of_traffic, clock.now, pending)
        clock.now += timedelta(days=1)
        await pruner(database, clock, settings).prune()
        # The open attempt's events are left out: one a day, every one kept (checked below).
        history.append(await database.transaction(counts, besides_payment=pending[0]))
    assert history[-1][0] > history[0][0]  # it did grow first
    assert len(set(history[5:])) == 1, history  # then it stopped
    # 2 days of query answers, 5 of callbacks and pushes, 3 of messages, 1 of inbound ids.
    assert history[-1] == (2 * 4 + 5 * 2, 3 * 2, 1 * 3)

    def pending_events(conn: Connection) -> int:
        query = select(func.count()).where(payment_events.c.payment_id == pending[0])
        return int(conn.execute(query).scalar_one())

    assert await database.transaction(pending_events) == 12


def many_old_inbound_ids(conn: Connection, count: int) -> None:
    rows = [
        {"channel": "whatsapp", "message_id": f"wamid.{n}", "received_at": days_ago(30)}
        for n in range(count)
    ]
    conn.execute(insert(inbound_messages), rows)


async def test_deletes_in_small_transactions(database: Database) -> None:
    """1,200 old rows go in at least three transactions of at most 500 rows, so the
    callback writer never waits behind one long delete."""
    await database.transaction(many_old_inbound_ids, 1200)
    report = await pruner(database, Clock(NOW)).prune()
    assert report.deleted["inbound_messages"] == 1200
    deleting = [n for n in report.batches if n]
    assert len(deleting) >= 3
    assert max(deleting) <= 500
    assert await database.transaction(counts) == (0, 0, 0)
