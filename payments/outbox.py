"""Queuing outbox messages: the rows the dispatcher later delivers.

Written inside the transaction of the change that causes them, so a message exists if
and only if its change committed; the unique dedupe key turns a repeat into nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from payments.settlement import OutboxMessage
from storage.schema import outbox


class OutboxStatus(StrEnum):
    PENDING = "pending"  # to be sent (at next_attempt_at)
    EXPANDED = "expanded"  # a merchant message copied once per merchant chat
    SENT = "sent"
    FAILED = "failed"  # refused for good, or given up on
    WITHDRAWN = "withdrawn"  # taken back before it was sent


_INSERT_OUTBOX = {
    dialect: insert_for(outbox).on_conflict_do_nothing(index_elements=["dedupe_key"])
    for dialect, insert_for in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def insert_outbox(conn: Connection, messages: Sequence[OutboxMessage], now: datetime) -> None:
    """Queue messages; a message whose dedupe key exists already is skipped, not doubled."""
    if not messages:
        return
    rows = [
        {
            "dedupe_key": m.dedupe_key,
            "kind": str(m.kind),
            "audience": str(m.audience),
            "customer_id": m.customer_id,
            "order_id": m.order_id,
            "payload": json.dumps(m.payload),
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now + m.delay,
            "created_at": now,
        }
        for m in messages
    ]
    conn.execute(_INSERT_OUTBOX[conn.dialect.name], rows)


def withdraw(conn: Connection, dedupe_key: str) -> bool:
    """Take back a message not sent yet (e.g. a delayed notice that became pointless)."""
    statement = (
        update(outbox)
        .where(outbox.c.dedupe_key == dedupe_key)
        .where(outbox.c.status == OutboxStatus.PENDING)
        .values(status=OutboxStatus.WITHDRAWN)
    )
    return conn.execute(statement).rowcount > 0
