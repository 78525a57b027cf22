"""The users service's tables (SQLAlchemy Core). The migrations in `migrations/` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from skuflow.platform.outbox import outbox_table

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),  # uuid4 hex
    Column("email", String(254), nullable=False),  # trimmed and lower-cased (emails.normalize_email)
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

# The keys that sign JWT access tokens (SKUFLOW_TOKEN_FORMAT=jwt), shared by every users process: the newest
# unretired one signs; a retired one is still published until the last token it signed has expired.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(32), primary_key=True),
    Column("algorithm", String(8), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("public_jwk", Text, nullable=False),  # JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
)

# The JWTs revoked before their expiry (an opaque token is revoked by deleting its row in `tokens`), by `jti`;
# deleted once expired. Verifiers of the `local` transport pull them (GET /v1/auth/revocations).
revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("sub", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Index("ix_revoked_tokens_revoked_at", "revoked_at"),
    Index("ix_revoked_tokens_expires_at", "expires_at"),
)

# The SKUs users wish for.
wishlist_items = Table(
    "wishlist_items",
    metadata,
    Column("user_id", String(32), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("user_id", "sku"),
    Index("ix_wishlist_items_sku", "sku"),
)

# What users has learned of each SKU's availability, and at which of inventory's revisions.
sku_availability = Table(
    "sku_availability",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Boolean, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)

# One row per email due: written with the availability change that makes it due (unique per user, SKU and
# revision, so a redelivery adds nothing), then sent by the mailer, which marks it sent, retries it later, or
# marks it failed after PERMANENT_FAILURES_ALLOWED permanent refusals (users/mailer.py).
notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("user_id", String(32), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("email", String(254), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("subject", String(255)),
    Column("sent_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(500)),
    Column("status", String(8), nullable=False, server_default="pending"),  # pending, sent or failed
    Column("permanent_failures", Integer, nullable=False, server_default="0"),  # SMTP 5xx, or cannot be built
    Column("traceparent", String(55)),  # the trace context of the change that made it due, for the send's span
    UniqueConstraint("user_id", "sku", "revision", name="uq_notifications_transition"),
    Index("ix_notifications_due", "status", "next_attempt_at"),
    Index("ix_notifications_user", "user_id", "id"),
)

# For the messages users will send, in the same transaction as their change.
outbox = outbox_table(metadata)
