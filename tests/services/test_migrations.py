"""Each service's migrations build exactly the schema its code declares (tables, columns, types, indexes)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.sql import sqltypes

from skuflow.platform.db import Database
from tests.conftest import Stack


@pytest.mark.parametrize("service", ["inventory", "catalog", "users"])
async def test_the_migrations_build_the_schema_the_code_declares(stack: Stack, service: str):
    declared = importlib.import_module(f"skuflow.{service}.db").metadata
    db = Database(stack.database_urls[service], importlib.import_module(f"skuflow.{service}.service").MIGRATIONS)
    try:
        await db.migrate()
        async with db.engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), declared)
            )
    finally:
        await db.close()
    if db.is_sqlite:  # its INTEGER is 64-bit already: migration 0003 leaves it, where BigInteger is declared
        differences = [_without_integer_widening(difference) for difference in differences]
        differences = [difference for difference in differences if difference]
    assert differences == []


def _without_integer_widening(difference: Any) -> Any:
    """The difference without its INTEGER -> BIGINT type changes (a group of column changes is a list)."""
    if not isinstance(difference, list):
        return difference
    return [
        change
        for change in difference
        if not (
            change[0] == "modify_type"
            and isinstance(change[5], sqltypes.Integer)
            and isinstance(change[6], sqltypes.Integer)
        )
    ]
