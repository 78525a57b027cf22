"""Catalog's tables (its own database; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Index, Integer, MetaData, Numeric, String, Table, false

from skuflow.platform.outbox import outbox_table

metadata = MetaData()

# One row per SKU catalog has heard of. Availability may be learned before the product is created: such a
# row has no name, and is not a product yet (404, not listed) until a PUT gives it one.
products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200)),
    # PostgreSQL keeps it exact. SQLite has no decimal type: SQLAlchemy stores a double and reads it back
    # rounded to 2 places, which is exact for the at most 12 significant digits a price may have.
    Column("price", Numeric(12, 2)),
    Column("available", Boolean, nullable=False, server_default=false()),
    Column("availability_revision", Integer, nullable=False, server_default="0"),  # inventory's revision
    Column("availability_checked_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_products_available_sku", "available", "sku"),
)

outbox = outbox_table(metadata)  # unused so far: kept for the orchestration replies (issue 7)
