"""stock: what is left of each product, and the holds that keep it for an order

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stock", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("low_stock", sa.Integer(), nullable=True))
    op.create_table(
        "stock_holds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stock_holds_order_id", "stock_holds", ["order_id"])
    op.create_index("ix_stock_holds_status_expires_at", "stock_holds", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_stock_holds_status_expires_at", table_name="stock_holds")
    op.drop_index("ix_stock_holds_order_id", table_name="stock_holds")
    op.drop_table("stock_holds")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("low_stock")
        batch_op.drop_column("stock")
