"""handover: how an order reaches its customer (pickup, or delivery to a zone and address)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The address and location are sealed by the application (storage.sealing): plain
    # text columns here, as for the sealed phone numbers.
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handover", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("delivery_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("delivery_address", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("delivery_location", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("delivery_location")
        batch_op.drop_column("delivery_address")
        batch_op.drop_column("delivery_zone")
        batch_op.drop_column("handover")
