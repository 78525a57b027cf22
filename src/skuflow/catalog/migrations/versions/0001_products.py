"""Products and the outbox.

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
        "products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("available", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("availability_revision", sa.Integer, nullable=False, server_default="0"),
        sa.Column("availability_checked_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_products_available_sku", "products", ["available", "sku"])
    create_outbox_v1(op)


def downgrade() -> None:
    for table in ("outbox", "products"):
        op.drop_table(table)
