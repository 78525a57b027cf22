from skuflow.inventory.db import metadata
from skuflow.platform.migrations import run_migrations

run_migrations(metadata)
