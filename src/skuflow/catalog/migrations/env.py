"""Alembic runs this on the connection `Database.migrate` hands over, at the catalog service's start."""

from skuflow.catalog.db import metadata
from skuflow.platform.migrations import run_migrations

run_migrations(metadata)
