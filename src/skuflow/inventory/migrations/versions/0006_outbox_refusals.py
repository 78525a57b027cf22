"""Outbox version 2: a row the broker refused carries its next try and the reason (platform/outbox.py).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from skuflow.platform.outbox import add_outbox_refusals_v2, drop_outbox_refusals_v2

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_refusals_v2(op)


def downgrade() -> None:
    drop_outbox_refusals_v2(op)
