"""What the users service does with its accounts: sign-up, the clients it keeps, granting and verifying tokens.

Each function takes the service's `Database`; every write is one unit of work (`db.transaction()`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from skuflow.platform.auth import Principal
from skuflow.platform.db import Database, utc
from skuflow.users import oauth, passwords, scopes
from skuflow.users.db import clients, tokens, users
from skuflow.users.tokens import looks_like_token, new_token, token_hash

log = logging.getLogger("skuflow.users.accounts")

# Expired tokens are deleted while issuing new ones, a bounded batch at a time, once they are this old
# (a grace that keeps "expired" and "unknown" apart in the logs of a recent failure).
KEEP_EXPIRED = timedelta(hours=1)
PURGE_BATCH = 100


class EmailTaken(Exception):
    """Another account already has this e-mail address."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


@dataclass(frozen=True, slots=True)
class ActiveToken:
    sub: str
    scope: str
    exp: int  # unix seconds


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


async def grant_token(db: Database, grant: oauth.Grant, ttl_seconds: int) -> IssuedToken:
    """Authenticate the grant's principal and issue its token. Raises `oauth.OAuthError`."""
    if isinstance(grant, oauth.PasswordGrant):
        sub, granted = await _authenticate_user(db, grant.username, grant.password), scopes.USER_SCOPE
        kind = "user"
    else:
        sub, granted = grant.client_id, await _authenticate_client(db, grant.client_id, grant.client_secret)
        kind = "client"
    # The scope is checked only once the principal is known: before that, it would tell what an account has.
    scope = scopes.narrow_scope(granted, grant.scope)
    return await issue_token(db, sub=sub, scope=scope, kind=kind, ttl_seconds=ttl_seconds)


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


async def issue_token(
    db: Database, *, sub: str, scope: str, kind: str, ttl_seconds: int, now: datetime | None = None
) -> IssuedToken:
    """Store a new token's hash (and delete a bounded batch of long-expired ones); return the token."""
    now = now or datetime.now(UTC)
    token = new_token()
    async with db.transaction() as session:
        expired = (
            select(tokens.c.token_hash).where(tokens.c.expires_at < now - KEEP_EXPIRED).limit(PURGE_BATCH)
        ).scalar_subquery()
        await session.execute(delete(tokens).where(tokens.c.token_hash.in_(expired)))
        await session.execute(
            tokens.insert().values(
                token_hash=token_hash(token),
                sub=sub,
                scope=scope,
                kind=kind,
                expires_at=now + timedelta(seconds=ttl_seconds),
                created_at=now,
            )
        )
    return IssuedToken(token, ttl_seconds, scope)


async def verify_token(db: Database, token: str, now: datetime | None = None) -> ActiveToken | None:
    """The token's subject, scope and expiry while it is valid; None when unknown, expired or malformed."""
    if not looks_like_token(token):
        return None
    async with db.reading() as session:
        row = (
            await session.execute(
                select(tokens.c.sub, tokens.c.scope, tokens.c.expires_at).where(
                    tokens.c.token_hash == token_hash(token)
                )
            )
        ).first()
    if row is None:
        return None
    expires_at = utc(row.expires_at)
    if expires_at <= (now or datetime.now(UTC)):
        return None
    return ActiveToken(sub=row.sub, scope=row.scope, exp=int(expires_at.timestamp()))


async def revoke_token(db: Database, token: str, by: Principal) -> bool:
    """End `token` now, if it is `by`'s own or `by` is the admin (RFC 7009); whether one was revoked. A token
    that is unknown, expired, already revoked or someone else's revokes nothing, and the caller is not told
    which (an answer that differed would tell a guesser that a token exists)."""
    if not looks_like_token(token):
        return False
    owned = tokens.c.token_hash == token_hash(token)
    if not by.has("admin"):
        owned &= tokens.c.sub == by.sub
    async with db.transaction() as session:
        revoked = (await session.execute(delete(tokens).where(owned).returning(tokens.c.sub))).first()
    if revoked is not None:
        log.info("a token of %s was revoked by %s", revoked.sub, by.sub)
    return revoked is not None


class LocalVerifier:
    """Users checks the tokens it receives in its own table (the others ask it over HTTP)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def verify(self, token: str) -> Principal | None:
        active = await verify_token(self.db, token)
        if active is None:
            return None
        return Principal(sub=active.sub, scopes=scopes.parse_scope(active.scope), exp=active.exp)
