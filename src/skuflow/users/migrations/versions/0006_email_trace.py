"""Each email due keeps the trace context of the change that made it due (W3C `traceparent`), so that the
mailer's send joins that trace.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as table:  # SQLite drops columns by copying the table
        table.drop_column("traceparent")
