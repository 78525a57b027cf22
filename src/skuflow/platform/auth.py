"""Checking the bearer tokens a service receives, by asking the users service (CONTRACT section 3).

`TokenVerifier` asks through the transport SKUFLOW_AUTH_TRANSPORT names (`token_transports`), caching a
positive answer for at most `SKUFLOW_AUTH_CACHE_SECONDS` and never beyond the token's expiry, and a negative
one briefly. It fails closed: when users cannot be asked, the request is refused with 503, never let through.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Generic, Protocol, TypeVar

from fastapi import Depends, HTTPException, Request, status

from skuflow.platform.http import ServiceUnavailable

SCOPES = ("stock:write", "catalog:write", "wishlist", "admin")
log = logging.getLogger("skuflow.auth")
NEGATIVE_SECONDS = 5.0  # how long "not a valid token" is believed
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token speaks for: a user's id or a client's id, its scopes, when it expires, and (for a
    signed token) its id, which a revocation names."""

    sub: str
    scopes: frozenset[str]
    exp: int
    token_id: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class Verifier(Protocol):
    async def verify(self, token: str) -> Principal | None: ...


class TokenVerifier:
    """The one verifier in front of every transport (`token_transports`): it caches, collapses, fails closed.

    - A positive answer is kept for at most `cache_seconds` and never past the token's expiry; a negative one
      for `NEGATIVE_SECONDS` (at most `cache_seconds`), against floods of bogus tokens: a token users does not
      know as valid now never becomes valid later (tokens are random), so the short wait costs nothing. The
      two are kept apart, each bounded, so that a flood of bogus tokens cannot push the valid ones out.
    - Concurrent look-ups of one token that is not cached make one call; the others await its answer.
    - When users cannot answer, `ask` raises `ServiceUnavailable`, and so does `verify`: the request is refused
      (503), never let through.
    - `revoked` is asked at every cache hit: a transport that learns of revocations without a call (`local`)
      ends a cached answer as soon as it knows, and may raise `ServiceUnavailable` when it cannot know.
    Tokens are kept only as their SHA-256.
    """

    def __init__(
        self,
        ask: Callable[[str], Awaitable[Principal | None]],
        cache_seconds: float,
        *,
        revoked: Callable[[Principal], bool] | None = None,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ask = ask
        self.revoked = revoked
        self.cache_seconds = cache_seconds
        self.negative_seconds = min(NEGATIVE_SECONDS, cache_seconds)
        self.clock = clock
        self.calls = 0  # questions put to users (the cache's misses, each concurrent flock counted once)
        self.hits = 0  # verifications answered from the cache (a valid token's answer or an invalid one's)
        self.misses = 0  # verifications the cache could not answer (each waiter of a concurrent flock counted)
        self._valid: _Expiring[Principal] = _Expiring(max_entries)
        self._invalid: _Expiring[None] = _Expiring(max_entries)
        self._asking: dict[str, asyncio.Future[Principal | None]] = {}

    async def verify(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # keep no raw token in memory longer than needed
        now = self.clock()
        if (principal := self._valid.get(key, now)) is not None:
            self.hits += 1
            return None if self.revoked is not None and self.revoked(principal) else principal
        if self._invalid.holds(key, now):
            self.hits += 1
            return None
        self.misses += 1
        asking = self._asking.get(key)
        if asking is None:
            asking = self._asking[key] = asyncio.ensure_future(self._ask(key, token))
            asking.add_done_callback(functools.partial(self._asked, key))
        # Shielded: one caller giving up (its request cancelled) does not cancel the answer the others await.
        return await asyncio.shield(asking)

    async def _ask(self, key: str, token: str) -> Principal | None:
        self.calls += 1
        principal = await self.ask(token)
        now = self.clock()
        if principal is None:
            self._invalid.keep(key, None, now + self.negative_seconds, now)
        else:
            self._valid.keep(key, principal, min(now + self.cache_seconds, principal.exp), now)
        return principal

    def _asked(self, key: str, asking: asyncio.Future[Principal | None]) -> None:
        if self._asking.get(key) is asking:
            del self._asking[key]
        if not asking.cancelled() and asking.exception() is not None:
            log.debug("token verification failed: %r", asking.exception())  # each waiter got it; none may be left


class _Expiring(Generic[V]):
    """Answers by key, each until its moment, at most `max_entries` (the least recently used go first)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def get(self, key: str, now: float) -> V | None:
        return self._entries[key][0] if self.holds(key, now) else None

    def holds(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if now >= entry[1]:
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def keep(self, key: str, value: V, until: float, now: float) -> None:
        if until <= now:
            return
        self._entries[key] = (value, until)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the principal of the request's bearer token (401 without a valid one)."""
    verifier: Verifier = request.app.state.runtime.verifier
    token = bearer_token(request)
    try:
        principal = await verifier.verify(token)
    except ServiceUnavailable as error:
        log.warning("cannot verify a token: %s", error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "cannot verify the token now: the users service does not answer; try again shortly",
            headers={"Retry-After": "5"},
        ) from None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or expired token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


async def principal_if_any(request: Request) -> Principal | None:
    """The principal of the request's bearer token, or None when the request sends no Authorization header.
    A token that is sent must be valid (401 otherwise), as everywhere else: a typo is told, never ignored."""
    if "authorization" not in request.headers:
        return None
    return await authenticated(request)


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """FastAPI dependency factory: a valid token that carries `scope` (403 otherwise)."""

    async def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not principal.has(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the scope {scope!r}")
        return principal

    return check
