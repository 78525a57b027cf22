"""A SKU's totals as 64-bit integers: each warehouse may report up to 10^9, and their sum can pass 2^31.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("on_hand", "available_for_sale")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite's INTEGER is already 64-bit
    for column in COLUMNS:
        op.alter_column("skus", column, type_=sa.BigInteger, existing_type=sa.Integer)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for column in COLUMNS:
        op.alter_column("skus", column, type_=sa.Integer, existing_type=sa.BigInteger)
