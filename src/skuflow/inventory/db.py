"""Inventory's tables (its own database; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from skuflow.platform.outbox import outbox_table

metadata = MetaData()

# One row per SKU: the recorded totals (written with each report, so reads see their writes at once) and
# the availability projection that the asynchronous recalculation maintains.
skus = Table(
    "skus",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),  # a sum over warehouses: may pass 2^31
    Column("safety_stock", Integer, nullable=False, server_default="0"),
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("available_for_sale", BigInteger),
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
    Index("ix_idempotency_keys_created_at", "created_at"),  # retention
)

# Every warehouse file the FTP feed handled: imported (in the same transaction as its numbers and their
# outbox rows, which is what makes a file count once) or rejected. A snapshot has one row per version.
warehouse_files = Table(
    "warehouse_files",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("path", String(1024), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # imported | rejected
    Column("lines", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("stale", Integer, nullable=False),
    Column("bad_lines", Integer, nullable=False),
    Column("changed_skus", Integer, nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Index("ix_warehouse_files_path", "path", "id"),
    Index("ix_warehouse_files_finished_at", "finished_at"),  # retention
)

# Orchestration (CONTRACT section 7): one flow per SKU change, and its three steps.
flows = Table(
    "flows",
    metadata,
    Column("flow_id", String(64), primary_key=True),  # time-ordered: the newest sort last
    Column("correlation_id", String(128), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("revision", Integer, nullable=False),  # the SKU's revision the flow was started for
    Column("status", String(16), nullable=False),  # running | completed | failed | superseded
    Column("available_for_sale", BigInteger),  # what recalculation found, sent on to catalog and users
    Column("recalculated_revision", Integer),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("traceparent", String(55)),  # the report's trace context: a resent command is published in it
    Index("ix_flows_correlation_id", "correlation_id"),
    Index("ix_flows_sku_status", "sku", "status"),
    Index("ix_flows_status_flow_id", "status", "flow_id"),
    Index("ix_flows_finished_at", "finished_at"),  # retention
)

flow_steps = Table(
    "flow_steps",
    metadata,
    Column("flow_id", String(64), nullable=False),
    Column("step", String(32), nullable=False),  # recalculate_sku | update_sku_availability | update_wishlists_for_sku
    Column("status", String(16), nullable=False),  # pending | done | failed
    Column("attempts", Integer, nullable=False),  # commands sent so far
    Column("sent_at", DateTime(timezone=True)),  # the last one, written to the outbox
    Column("command_id", String(64)),  # its message_id: its step's clock starts once the relay published it
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
    PrimaryKeyConstraint("flow_id", "step"),
    Index("ix_flow_steps_waiting", "status", "sent_at"),
)

outbox = outbox_table(metadata)
