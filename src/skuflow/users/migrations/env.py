"""Alembic runs this on the connection `Database.migrate` hands over, at the users service's start."""

from skuflow.platform.migrations import run_migrations
from skuflow.users.db import metadata

run_migrations(metadata)
