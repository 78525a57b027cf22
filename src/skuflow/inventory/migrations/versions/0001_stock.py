"""Stock levels, SKUs, idempotency keys and the outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from skuflow.platform.outbox import create_outbox_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "skus",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("safety_stock", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_for_sale", sa.Integer),
        sa.Column("recalculated_revision", sa.Integer),
        sa.Column("recalculated_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "stock_levels",
        sa.Column("warehouse_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("warehouse_id", "sku"),
    )
    op.create_index("ix_stock_levels_sku", "stock_levels", ["sku"])
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key"),
    )
    create_outbox_v1(op)


def downgrade() -> None:
    for table in ("outbox", "idempotency_keys", "stock_levels", "skus"):
        op.drop_table(table)
