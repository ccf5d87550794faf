"""seal phone numbers at rest (and what embeds one)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Rows written before this revision hold phone numbers in clear: they are sealed here with
the data key (DUKA_DATA_KEY) the migrating engine was made with. Sealed values are longer,
so PostgreSQL's short VARCHARs widen first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from storage.sealing import sealer_of

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Kept here, not read from storage.schema: a migration must not change when the schema does.
SEALED_VALUES = {
    "customers": ("chat_id", "msisdn"),
    "conversations": ("chat_id",),
    "message_refs": ("chat_id",),
    "payments": ("msisdn", "paid_msisdn", "checkout_request_id"),
    "payment_events": ("checkout_request_id",),
    "outbox": ("dedupe_key", "recipient"),
    "unmatched_payments": ("msisdn", "checkout_request_id", "resolved_by"),
    "review_actions": ("actor",),
}
SEALED_TEXTS = {
    "payment_events": ("raw", "note"),
    "outbox": ("payload", "last_error"),
    "conversations": ("state",),
    "inbound_messages": ("payload",),
    "unmatched_payments": ("raw", "note"),
    "review_actions": ("note",),
}
BATCH = 500


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, columns in SEALED_VALUES.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.String(255))
    sealer = sealer_of(bind.dialect)
    _rewrite(bind, sealer.seal_value, sealer.seal_text)


def downgrade() -> None:
    bind = op.get_bind()
    sealer = sealer_of(bind.dialect)
    _rewrite(bind, sealer.open_value, sealer.open_text)


def _rewrite(bind: sa.Connection, value: Callable[[str], str], text: Callable[[str], str]) -> None:
    """Every stored value through ``value`` or ``text`` (seal, or open), in batches."""
    tables = sorted(set(SEALED_VALUES) | set(SEALED_TEXTS))
    for name in tables:
        kinds: dict[str, Callable[[str], str]] = {c: value for c in SEALED_VALUES.get(name, ())}
        kinds.update({c: text for c in SEALED_TEXTS.get(name, ())})
        table = sa.table(name, sa.column("id"), *(sa.column(c) for c in kinds))
        last_id = 0
        while True:
            rows = bind.execute(
                sa.select(table).where(table.c.id > last_id).order_by(table.c.id).limit(BATCH)
            ).all()
            if not rows:
                break
            last_id = rows[-1].id
            changes = []
            for row in rows:
                new = {c: fn(getattr(row, c)) for c, fn in kinds.items() if getattr(row, c)}
                if any(new[c] != getattr(row, c) for c in new):
                    changes.append({"row_id": row.id, **{f"new_{c}": v for c, v in new.items()}})
            for change in changes:  # one statement per row: which columns vary by row
                columns: dict[str, Any] = {
                    c.removeprefix("new_"): sa.bindparam(c) for c in change if c != "row_id"
                }
                bind.execute(
                    table.update().where(table.c.id == sa.bindparam("row_id")).values(columns),
                    change,
                )
