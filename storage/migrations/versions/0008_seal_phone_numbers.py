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

import sqlalchemy as sa
from alembic import op

from storage.sealed_rows import rewrite
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


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, columns in SEALED_VALUES.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.String(255))
    sealer = sealer_of(bind.dialect)
    _rewrite_all(bind, sealer.seal_value, sealer.seal_text)


def downgrade() -> None:
    sealer = sealer_of(op.get_bind().dialect)
    _rewrite_all(op.get_bind(), sealer.open_value, sealer.open_text)


def _rewrite_all(
    bind: sa.Connection, value: Callable[[str], str], text: Callable[[str], str]
) -> None:
    """Every stored value through ``value`` or ``text`` (seal, or open)."""
    for name in sorted(set(SEALED_VALUES) | set(SEALED_TEXTS)):
        kinds: dict[str, Callable[[str], str | None]] = {
            column: value for column in SEALED_VALUES.get(name, ())
        }
        kinds.update({column: text for column in SEALED_TEXTS.get(name, ())})
        rewrite(bind, name, kinds)
