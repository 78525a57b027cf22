"""Inventory's tables (its own database; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table

from skuflow.platform.outbox import outbox_table

metadata = MetaData()

# One row per SKU: the recorded totals (written with each report, so reads see their writes at once) and
# the availability projection that the asynchronous recalculation maintains.
skus = Table(
    "skus",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("safety_stock", Integer, nullable=False, server_default="0"),
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("available_for_sale", Integer),
    Column("recalculated_revision", Integer),
    Column("recalculated_at", DateTime(timezone=True)),
)

# The last number each warehouse reported for each SKU, with the time it was true.
stock_levels = Table(
    "stock_levels",
    metadata,
    Column("warehouse_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("on_hand", Integer, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("warehouse_id", "sku"),
    Index("ix_stock_levels_sku", "sku"),
)

# Answers to requests sent with an Idempotency-Key, per caller, replayed for a repeat of the same request.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", String(128), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("principal", "key"),
)

outbox = outbox_table(metadata)
