"""Emails get a status (pending, sent, failed) and a count of permanent refusals: an email the SMTP server
refuses for good (5xx) or that cannot be built is `failed` after 3 of them (users/mailer.py).

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
    with op.batch_alter_table("notifications") as table:  # batch: SQLite cannot alter a column in place
        table.add_column(sa.Column("status", sa.String(8), nullable=False, server_default="pending"))
        table.add_column(sa.Column("permanent_failures", sa.Integer, nullable=False, server_default="0"))
        table.drop_index("ix_notifications_due")
        table.create_index("ix_notifications_due", ["status", "next_attempt_at"])
    op.execute("UPDATE notifications SET status = 'sent' WHERE sent_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("notifications") as table:
        table.drop_index("ix_notifications_due")
        table.create_index("ix_notifications_due", ["sent_at", "next_attempt_at"])
        table.drop_column("permanent_failures")
        table.drop_column("status")
