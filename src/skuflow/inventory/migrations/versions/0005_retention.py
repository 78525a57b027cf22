"""Indexes for retention: what is older than SKUFLOW_RETENTION_DAYS is found without a full scan.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"]),
    ("ix_flows_finished_at", "flows", ["finished_at"]),
    ("ix_warehouse_files_finished_at", "warehouse_files", ["finished_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
