"""Each flow keeps the trace context of the report that started it (W3C `traceparent`), so that a step's
command sent again after a timeout is published in the flow's own trace.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flows", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    with op.batch_alter_table("flows") as table:  # SQLite drops columns by copying the table
        table.drop_column("traceparent")
