"""The keys users signs JWT access tokens with (SKUFLOW_TOKEN_FORMAT=jwt), kept in its database so that every
users process signs with the same current key and publishes the same key set.

- The current key is the newest one not retired. With `jwt`, a users process that finds none creates one at
  start (under a lock: several processes starting at once create one between them).
- `rotate` retires the current key and makes a new one: every process signs with it within
  `REFRESH_SECONDS`; the retired key is still published, so its tokens verify until the last of them
  expires (the token lifetime, plus the time a process may have gone on signing with it).
- The key set (`GET /.well-known/jwks.json`) is read from the database at each request: it is asked for
  rarely (a verifier's start, or a token signed by a key it does not know yet), and a process that has not
  yet refreshed never publishes a set without the key another process just began to sign with.

The private keys are stored unencrypted: whoever can read users' database can mint tokens (as whoever can
write it can already make an admin). Protect the database as the keys' store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, select, update

from skuflow.auth import signed_tokens
from skuflow.platform.background import Periodic
from skuflow.platform.db import Database
from skuflow.users.db import signing_keys

log = logging.getLogger("skuflow.users.signing_keys")

REFRESH_SECONDS = 10.0  # how soon every users process signs with a key another one rotated in
RELOAD_PAUSE = 1.0  # a token naming an unknown key reloads the keys at most this often
LOCK = "skuflow-signing-keys"
SIGNING = signing_keys.c.retired_at.is_(None)  # the keys not retired: the newest of them signs


@dataclass(frozen=True)
class Rotation:
    kid: str  # the new key, which signs from now on
    retired: list[str]  # the keys it replaces, published until their last token has expired


class SigningKeys:
    """A component of the users runtime: the current signing key, and the key set users verifies JWTs with."""

    def __init__(self, db: Database, token_ttl_seconds: int, *, create: bool) -> None:
        """`create`: make a key at start when there is none (SKUFLOW_TOKEN_FORMAT=jwt)."""
        self.db = db
        self.create = create
        self.token_ttl = timedelta(seconds=token_ttl_seconds)
        self._current: tuple[str, rsa.RSAPrivateKey] | None = None
        self._keys = signed_tokens.KeySet()
        self._loaded_at = 0.0
        self._reloading = asyncio.Lock()
        self._periodic = Periodic("signing keys refresh", self.load, REFRESH_SECONDS, at_start=False)

    async def start(self) -> None:
        if self.create:
            await self._ensure_one()
        await self.load()
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    @property
    def current(self) -> tuple[str, rsa.RSAPrivateKey]:
        """The key id and private key to sign with."""
        if self._current is None:
            raise RuntimeError("no signing key: SKUFLOW_TOKEN_FORMAT=jwt makes one at start")
        return self._current

    def sign(self, *, sub: str, scope: str, ttl_seconds: int, now: float) -> str:
        kid, key = self.current
        return signed_tokens.sign(kid, key, sub=sub, scope=scope, ttl_seconds=ttl_seconds, now=now)

    async def verify(self, token: str) -> signed_tokens.Claims | None:
        """The token's claims if one of the published keys signed it and it holds; a token naming a key not
        loaded yet (rotated in by another process) reloads the keys first, at most every RELOAD_PAUSE."""
        try:
            return signed_tokens.verify(token, self._keys)
        except signed_tokens.UnknownKey as unknown:
            kid = unknown.kid
        async with self._reloading:  # concurrent tokens of unknown keys make one read of the database
            if kid not in self._keys and time.monotonic() - self._loaded_at >= RELOAD_PAUSE:
                await self.load()
        try:
            return signed_tokens.verify(token, self._keys)
        except signed_tokens.UnknownKey:
            return None

    async def load(self) -> None:
        """Read the current key and the published ones from the database."""
        rows = await self._published()
        self._keys = signed_tokens.KeySet(json.loads(row.public_jwk) for row in rows)
        self._loaded_at = time.monotonic()
        signing = [row for row in rows if row.retired_at is None]
        if signing:
            newest = max(signing, key=lambda row: (row.created_at, row.kid))
            if self._current is None or self._current[0] != newest.kid:
                self._current = (newest.kid, signed_tokens.private_key(newest.kid, newest.private_pem))
                log.info("signing tokens with key %s", newest.kid)

    async def jwks(self) -> dict[str, Any]:
        """The published key set (RFC 7517), read now."""
        return {"keys": [json.loads(row.public_jwk) for row in await self._published()]}

    async def rotate(self) -> Rotation:
        """Retire the current key(s) and make a new one; delete the keys whose tokens have all expired."""
        new = await asyncio.to_thread(signed_tokens.new_signing_key)  # RSA key generation: tens of ms of CPU
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            await self.db.lock_for_transaction(session, LOCK)
            retired = list((await session.scalars(select(signing_keys.c.kid).where(SIGNING))).all())
            await session.execute(update(signing_keys).where(SIGNING).values(retired_at=now))
            await session.execute(delete(signing_keys).where(signing_keys.c.retired_at < now - self._window))
            await session.execute(signing_keys.insert().values(**_row(new, now)))
        await self.load()
        log.info("signing keys rotated: %s signs now; %s verify until their tokens expire", new.kid, retired or "none")
        return Rotation(new.kid, retired)

    @property
    def _window(self) -> timedelta:
        """How long a retired key is published: its last token's lifetime, and the time a process may have
        gone on signing with it before it refreshed."""
        return self.token_ttl + timedelta(seconds=2 * REFRESH_SECONDS)

    async def _published(self) -> list[Any]:
        now = datetime.now(UTC)
        published = SIGNING | (signing_keys.c.retired_at > now - self._window)
        async with self.db.reading() as session:
            return list((await session.execute(select(signing_keys).where(published))).all())

    async def _ensure_one(self) -> None:
        a_signing_key = select(signing_keys.c.kid).where(SIGNING).limit(1)
        async with self.db.reading() as session:
            if await session.scalar(a_signing_key):
                return
        new = await asyncio.to_thread(signed_tokens.new_signing_key)
        async with self.db.transaction() as session:
            await self.db.lock_for_transaction(session, LOCK)
            if await session.scalar(a_signing_key):
                return  # another process made one meanwhile
            await session.execute(signing_keys.insert().values(**_row(new, datetime.now(UTC))))
        log.info("made a signing key, %s", new.kid)


def _row(key: signed_tokens.SigningKey, now: datetime) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "algorithm": signed_tokens.ALGORITHM,
        "private_pem": key.private_pem,
        "public_jwk": json.dumps(key.public_jwk),
        "created_at": now,
        "retired_at": None,
    }
