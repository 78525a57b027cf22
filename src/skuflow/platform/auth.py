"""Checking the bearer tokens a service receives, by asking the users service (CONTRACT section 3).

`TokenVerifier` caches a positive answer for at most `SKUFLOW_AUTH_CACHE_SECONDS` and never beyond the
token's expiry; a negative answer is not cached (the token may be brand new). It fails closed: when users
cannot be asked, the request is refused with 503, never let through.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

import aiohttp
from fastapi import Depends, HTTPException, Request, status

from skuflow.platform.http import ServiceUnavailable, call_json

SCOPES = ("stock:write", "catalog:write", "wishlist", "admin")
log = logging.getLogger("skuflow.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token speaks for: a user's id or a client's id, its scopes, and when it expires."""

    sub: str
    scopes: frozenset[str]
    exp: int

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class Verifier(Protocol):
    async def verify(self, token: str) -> Principal | None: ...


class TokenVerifier:
    def __init__(
        self,
        users_url: str,
        session: aiohttp.ClientSession,
        cache_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users_url = users_url.rstrip("/")
        self.session = session
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self.clock = clock
        self.calls = 0  # answers fetched from users (the cache's misses)
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def verify(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # keep no raw token in memory longer than needed
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None:
            known, valid_until = cached
            if now < valid_until:
                self._cache.move_to_end(key)
                return known
            del self._cache[key]
        principal = await self._ask(token)
        if principal is not None and self.cache_seconds > 0:
            self._cache[key] = (principal, min(now + self.cache_seconds, principal.exp))
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return principal

    async def _ask(self, token: str) -> Principal | None:
        self.calls += 1
        status_code, body = await call_json(
            self.session, "POST", f"{self.users_url}/v1/auth/verify", json={"token": token}
        )
        if status_code != 200 or not isinstance(body, dict):
            raise ServiceUnavailable(f"users answered {status_code} to a token verification")
        if not body.get("active"):
            return None
        return Principal(sub=str(body["sub"]), scopes=frozenset(str(body["scope"]).split()), exp=int(body["exp"]))


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
