"""Outbox rows claimed by one process at a time (PostgreSQL, several processes).

A process claims the rows it is about to send (``claimed_by``, ``claimed_until``); the
others skip them, and skip every chat in which another process holds a row, so one chat's
messages go out in order from one process. A claim is renewed while its process lives
(every ``CLAIM_RENEW_SECONDS``) and lapses ``CLAIM_LEASE`` after a crash; a clean stop,
or a process found dead on the same host (``bot.processes``), gives its claims up at once.
The claiming itself is serialized across processes by an advisory lock: under READ
COMMITTED, the next claimer then sees the previous one's claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, exists, or_, text, update

from payments.outbox import OutboxStatus
from payments.settlement import Audience
from storage.schema import outbox

CLAIM_LEASE = timedelta(seconds=60)
CLAIM_RENEW_SECONDS = 15.0
UNCLAIMED: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
_CLAIMING_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('duka-outbox-claims', 0))")


def one_process_at_a_time(conn: Connection) -> None:
    """On PostgreSQL, hold the outbox's claiming lock until this transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(_CLAIMING_LOCK)


def held_elsewhere(row: Any, claimant: str, now: datetime) -> ColumnElement[bool]:
    """``row`` (the outbox table in a query) is claimed by another process, or another
    process holds a row of its chat."""
    other = outbox.alias("other")
    live_elsewhere = (
        (other.c.status == OutboxStatus.PENDING)
        & (other.c.claimed_until > now)
        & (other.c.claimed_by != claimant)
    )
    same_chat = or_(
        other.c.id == row.c.id,
        (row.c.audience == Audience.MERCHANT)
        & (other.c.audience == Audience.MERCHANT)
        & (other.c.recipient == row.c.recipient),
        (row.c.audience == Audience.CUSTOMER)
        & (other.c.audience == Audience.CUSTOMER)
        & (other.c.customer_id == row.c.customer_id),
    )
    return exists().where(live_elsewhere & same_chat)


def renew_claims(conn: Connection, claimant: str, now: datetime) -> None:
    conn.execute(
        update(outbox)
        .where(outbox.c.claimed_by == claimant)
        .where(outbox.c.status == OutboxStatus.PENDING)
        .values(claimed_until=now + CLAIM_LEASE)
    )


def release_claims(conn: Connection, claimants: Sequence[str]) -> None:
    """Whatever these processes claimed and did not send, others may send now."""
    if claimants:
        conn.execute(
            update(outbox)
            .where(outbox.c.claimed_by.in_(claimants))
            .where(outbox.c.status == OutboxStatus.PENDING)
            .values(**UNCLAIMED)
        )
