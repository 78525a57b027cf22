"""What the users service does with its accounts: sign-up, the clients it keeps, and granting tokens (issued,
verified and revoked by `access_tokens`).

Each function takes the service's `Database`; every write is one unit of work (`db.transaction()`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from skuflow.platform.db import Database
from skuflow.users import oauth, passwords, scopes
from skuflow.users.access_tokens import AccessTokens, IssuedToken
from skuflow.users.db import clients, users

log = logging.getLogger("skuflow.users.accounts")


class EmailTaken(Exception):
    """Another account already has this e-mail address."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str


async def sign_up(db: Database, email: str, name: str, password: str) -> User:
    """Create a user; `email` is already normalised. Raises `EmailTaken`."""
    async with db.reading() as session:
        if await session.scalar(select(users.c.id).where(users.c.email == email)) is not None:
            raise EmailTaken(email)  # answered without spending a hash
    user = User(uuid.uuid4().hex, email, name)
    password_hash = await passwords.hash_secret(password)  # outside the transaction: no lock held meanwhile
    try:
        async with db.transaction() as session:
            await session.execute(
                users.insert().values(
                    id=user.id,
                    email=email,
                    name=name,
                    password_hash=password_hash,
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:  # the same address, signed up concurrently
        raise EmailTaken(email) from None
    return user


async def ensure_clients(db: Database, secrets: Mapping[str, str]) -> None:
    """Create the built-in clients, or bring their secret and scope up to date (at every start)."""
    rows = [
        {
            "client_id": client_id,
            "secret_hash": await passwords.hash_secret(secret),
            "scope": scopes.CLIENT_SCOPES[client_id],
            "created_at": datetime.now(UTC),
        }
        for client_id, secret in secrets.items()
    ]
    async with db.transaction() as session:
        for row in rows:
            # An upsert: several processes of the service may start at once.
            statement = db.insert(clients).values(**row)
            statement = statement.on_conflict_do_update(
                index_elements=[clients.c.client_id],
                set_={"secret_hash": statement.excluded.secret_hash, "scope": statement.excluded.scope},
            )
            await session.execute(statement)


async def grant_token(db: Database, grant: oauth.Grant, tokens: AccessTokens) -> IssuedToken:
    """Authenticate the grant's principal and issue its token. Raises `oauth.OAuthError`."""
    if isinstance(grant, oauth.PasswordGrant):
        sub, granted = await _authenticate_user(db, grant.username, grant.password), scopes.USER_SCOPE
        kind = "user"
    else:
        sub, granted = grant.client_id, await _authenticate_client(db, grant.client_id, grant.client_secret)
        kind = "client"
    # The scope is checked only once the principal is known: before that, it would tell what an account has.
    scope = scopes.narrow_scope(granted, grant.scope)
    return await tokens.issue(sub=sub, scope=scope, kind=kind)


async def _authenticate_user(db: Database, email: str, password: str) -> str:
    async with db.reading() as session:
        row = (await session.execute(select(users.c.id, users.c.password_hash).where(users.c.email == email))).first()
    if not await passwords.verify_secret(row.password_hash if row else None, password) or row is None:
        # One answer for an unknown user and a wrong password: it does not tell which addresses have accounts.
        raise oauth.OAuthError("invalid_grant", "unknown user or wrong password")
    return str(row.id)


async def _authenticate_client(db: Database, client_id: str, secret: str) -> str:
    async with db.reading() as session:
        row = (
            await session.execute(
                select(clients.c.secret_hash, clients.c.scope).where(clients.c.client_id == client_id)
            )
        ).first()
    if not await passwords.verify_secret(row.secret_hash if row else None, secret) or row is None:
        raise oauth.client_authentication_failed("unknown client or wrong secret")
    return str(row.scope)
