"""The users service's tables (SQLAlchemy Core). The migrations in `migrations/` create them."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, UniqueConstraint

from skuflow.platform.outbox import outbox_table

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),  # uuid4 hex
    Column("email", String(254), nullable=False),  # trimmed and lower-cased (domain.normalize_email)
    Column("name", String(100), nullable=False),
    Column("password_hash", String(255), nullable=False),  # argon2
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("email", name="uq_users_email"),
)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("secret_hash", String(255), nullable=False),  # argon2
    Column("scope", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # hex SHA-256 of the opaque token; never the token
    Column("sub", String(64), nullable=False),  # a user's id or a client's id
    Column("scope", String(255), nullable=False),
    Column("kind", String(8), nullable=False),  # 'user' or 'client'
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_tokens_expires_at", "expires_at"),  # for deleting expired tokens
)

# For the messages of later issues (wishlists, notifications), sent in the same transaction as their change.
outbox = outbox_table(metadata)
