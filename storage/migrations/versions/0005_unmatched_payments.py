"""unmatched money and the merchant's review decisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unmatched_payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("receipt", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("amount_exact", sa.String(length=32), nullable=False),
        sa.Column("msisdn", sa.String(length=12), nullable=True),
        sa.Column("masked_phone", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=32), server_default="", nullable=False),
        sa.Column("checkout_request_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("transaction_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=80), nullable=True),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_unmatched_payments_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unmatched_payments")),
        sa.UniqueConstraint("receipt", name=op.f("uq_unmatched_payments_receipt")),
    )
    op.create_index("ix_unmatched_payments_status", "unmatched_payments", ["status"], unique=False)
    op.create_table(
        "review_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_review_actions_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_actions")),
    )


def downgrade() -> None:
    op.drop_table("review_actions")
    op.drop_index("ix_unmatched_payments_status", table_name="unmatched_payments")
    op.drop_table("unmatched_payments")
