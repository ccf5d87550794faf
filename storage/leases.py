"""Leases: a job that only one process may run at a time (the reconciler, pruning).

Every process that could run the job calls ``hold_lease`` before each pass: it gets (or
keeps) the lease when it is free, has lapsed, or is already its own. The holder renews it
at every pass; when the holder dies, the lease lapses after its term and the next process
to ask takes it over. With one process (SQLite) the lease is always its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.schema import leases


def hold_lease(conn: Connection, name: str, holder: str, now: datetime, term: timedelta) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + term``; whether it holds it."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(leases).values(name=name, holder=holder, expires_at=now + term)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={"holder": holder, "expires_at": now + term},
            where=(leases.c.holder == holder) | (leases.c.expires_at < now),
        )
    )
    current = conn.execute(select(leases.c.holder).where(leases.c.name == name)).scalar_one()
    return bool(current == holder)


def release_lease(conn: Connection, name: str, holder: str) -> None:
    """Give the lease up at once (a clean stop), so another process need not wait it out."""
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


def lease_holder(conn: Connection, name: str, now: datetime) -> str | None:
    """Who holds ``name`` now; None when nobody does (never taken, or lapsed)."""
    row = conn.execute(
        select(leases.c.holder).where(leases.c.name == name, leases.c.expires_at >= now)
    ).first()
    return None if row is None else str(row.holder)
