"""Access tokens: issued in the format SKUFLOW_TOKEN_FORMAT names, verified and revoked in either.

- `opaque` (the default): 256 random bits, stored as their SHA-256 in `tokens` (`users/tokens.py` says why);
  revoking deletes the row.
- `jwt`: signed by users' current key (`signing_keys`), stored nowhere; other services verify them in
  process (SKUFLOW_AUTH_TRANSPORT=local). Revoking records the token's `jti` in `revoked_tokens` until it
  expires, and the verifiers pull that list (`revocations`).

Both formats are verified whatever the setting, so that switching it never ends the tokens already issued.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Column, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.auth.signed_tokens import looks_like_jwt
from skuflow.platform.auth import Principal
from skuflow.platform.db import Database, utc
from skuflow.users import scopes
from skuflow.users.db import revoked_tokens, tokens
from skuflow.users.signing_keys import SigningKeys
from skuflow.users.tokens import looks_like_token, new_token, token_hash

log = logging.getLogger("skuflow.users.tokens")

# Expired tokens (and revocations of expired JWTs) are deleted while issuing or revoking, a bounded batch at a
# time, once they are this old (a grace that keeps "expired" and "unknown" apart in the logs of a recent failure).
KEEP_EXPIRED = timedelta(hours=1)
PURGE_BATCH = 100
REVOCATIONS_PAGE = 1000
# A revocation committed a little after a pull began may carry an earlier time than the pull's: the next pull
# starts this far back (a revocation is a tiny transaction; seconds cover it many times over).
REVOCATION_LAG = timedelta(seconds=5)


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


@dataclass(frozen=True, slots=True)
class Revocation:
    jti: str
    exp: int
    revoked_at: datetime


@dataclass(frozen=True, slots=True)
class Revocations:
    revocations: list[Revocation]
    next: datetime  # the `since` of the next pull
    more: bool  # whether the page was full: pull again at once


class AccessTokens:
    def __init__(
        self, db: Database, keys: SigningKeys, token_format: Literal["opaque", "jwt"], ttl_seconds: int
    ) -> None:
        self.db = db
        self.keys = keys
        self.format = token_format
        self.ttl_seconds = ttl_seconds

    async def issue(self, *, sub: str, scope: str, kind: str, now: datetime | None = None) -> IssuedToken:
        now = now or datetime.now(UTC)
        if self.format == "jwt":
            token = self.keys.sign(sub=sub, scope=scope, ttl_seconds=self.ttl_seconds, now=now.timestamp())
        else:
            token = await self._store_opaque(sub, scope, kind, now)
        return IssuedToken(token, self.ttl_seconds, scope)

    async def _store_opaque(self, sub: str, scope: str, kind: str, now: datetime) -> str:
        """Store a new token's hash (and delete a bounded batch of long-expired ones); return the token."""
        token = new_token()
        async with self.db.transaction() as session:
            await _purge_expired(session, tokens.c.token_hash, tokens.c.expires_at, now)
            await session.execute(
                tokens.insert().values(
                    token_hash=token_hash(token),
                    sub=sub,
                    scope=scope,
                    kind=kind,
                    expires_at=now + timedelta(seconds=self.ttl_seconds),
                    created_at=now,
                )
            )
        return token

    async def verify(self, token: str, now: datetime | None = None) -> ActiveToken | None:
        """The token's subject, scope and expiry while it is valid; None when unknown, expired, revoked or
        malformed."""
        if looks_like_jwt(token):
            return await self._verify_jwt(token, now)
        if not looks_like_token(token):
            return None
        async with self.db.reading() as session:
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

    async def _verify_jwt(self, token: str, now: datetime | None) -> ActiveToken | None:
        claims = await self.keys.verify(token)
        if claims is None or claims.exp <= (now.timestamp() if now else time.time()):
            return None
        async with self.db.reading() as session:
            if await session.scalar(select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == claims.jti)):
                return None
        return ActiveToken(sub=claims.sub, scope=claims.scope, exp=claims.exp)

    async def revoke(self, token: str, by: Principal) -> bool:
        """End `token` now, if it is `by`'s own or `by` is the admin (RFC 7009); whether one was revoked. A
        token that is unknown, expired, already revoked or someone else's revokes nothing, and the caller is
        not told which (an answer that differed would tell a guesser that a token exists)."""
        if looks_like_jwt(token):
            revoked = await self._revoke_jwt(token, by)
        elif looks_like_token(token):
            owned = tokens.c.token_hash == token_hash(token)
            if not by.has("admin"):
                owned &= tokens.c.sub == by.sub
            async with self.db.transaction() as session:
                row = (await session.execute(delete(tokens).where(owned).returning(tokens.c.sub))).first()
            revoked = row.sub if row is not None else None
        else:
            revoked = None
        if revoked is not None:
            log.info("a token of %s was revoked by %s", revoked, by.sub)
        return revoked is not None

    async def _revoke_jwt(self, token: str, by: Principal) -> str | None:
        claims = await self.keys.verify(token)
        if claims is None or not (by.has("admin") or claims.sub == by.sub):
            return None
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            await _purge_expired(session, revoked_tokens.c.jti, revoked_tokens.c.expires_at, now)
            row = {
                "jti": claims.jti,
                "sub": claims.sub,
                "expires_at": datetime.fromtimestamp(claims.exp, UTC),
                "revoked_at": now,
            }
            insert = self.db.insert(revoked_tokens).values(**row).on_conflict_do_nothing()
            done = await session.execute(insert.returning(revoked_tokens.c.jti))
            return claims.sub if done.first() is not None else None

    async def revocations(self, since: datetime | None) -> Revocations:
        """The revocations of tokens not yet expired, recorded at or after `since` (all of them without),
        oldest first, a page at a time."""
        now = datetime.now(UTC)
        query = select(revoked_tokens.c.jti, revoked_tokens.c.expires_at, revoked_tokens.c.revoked_at).where(
            revoked_tokens.c.expires_at > now
        )
        if since is not None:
            query = query.where(revoked_tokens.c.revoked_at >= since)
        query = query.order_by(revoked_tokens.c.revoked_at, revoked_tokens.c.jti).limit(REVOCATIONS_PAGE)
        async with self.db.reading() as session:
            rows = (await session.execute(query)).all()
        found = [Revocation(row.jti, int(utc(row.expires_at).timestamp()), utc(row.revoked_at)) for row in rows]
        if len(found) == REVOCATIONS_PAGE:
            return Revocations(found, found[-1].revoked_at, more=True)
        return Revocations(found, now - REVOCATION_LAG, more=False)


async def _purge_expired(session: AsyncSession, key: Column[Any], expires_at: Column[Any], now: datetime) -> None:
    """Delete a bounded batch of the rows of `key`'s table that expired over KEEP_EXPIRED ago."""
    expired = select(key).where(expires_at < now - KEEP_EXPIRED).limit(PURGE_BATCH).scalar_subquery()
    await session.execute(delete(key.table).where(key.in_(expired)))


class LocalVerifier:
    """Users checks the tokens it receives itself (the others ask it, or verify its JWTs in process)."""

    def __init__(self, tokens: AccessTokens) -> None:
        self.tokens = tokens

    async def verify(self, token: str) -> Principal | None:
        active = await self.tokens.verify(token)
        if active is None:
            return None
        return Principal(sub=active.sub, scopes=scopes.parse_scope(active.scope), exp=active.exp)
