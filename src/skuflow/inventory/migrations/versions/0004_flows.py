"""Orchestrated flows and their steps.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("flow_id", sa.String(64), primary_key=True),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("available_for_sale", sa.BigInteger),
        sa.Column("recalculated_revision", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_flows_correlation_id", "flows", ["correlation_id"])
    op.create_index("ix_flows_sku_status", "flows", ["sku", "status"])
    op.create_index("ix_flows_status_flow_id", "flows", ["status", "flow_id"])
    op.create_table(
        "flow_steps",
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("command_id", sa.String(64)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("flow_id", "step"),
    )
    op.create_index("ix_flow_steps_waiting", "flow_steps", ["status", "sent_at"])


def downgrade() -> None:
    op.drop_table("flow_steps")
    op.drop_table("flows")
