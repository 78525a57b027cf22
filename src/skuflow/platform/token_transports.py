"""How a service asks users "is this token valid, and for whom?" (SKUFLOW_AUTH_TRANSPORT): the question itself,
without the cache, which `auth.TokenVerifier` puts in front of any of them.

- `RestAsk`: `POST /v1/auth/verify` on users' HTTP API (JSON; retries a connection error or a 502/503/504).
- `GrpcAsk`: `skuflow.auth.v1.Auth/Verify` on SKUFLOW_USERS_GRPC, over one long-lived HTTP/2 channel per
  process, each call with a deadline, one more try when users cannot be reached.
- `LocalAsk`: no call at all for a JWT (SKUFLOW_TOKEN_FORMAT=jwt on users): its signature is checked in process
  against the key set users publishes, read at every pull and again for a key id it does not know; the revoked
  tokens are pulled from users every third of SKUFLOW_AUTH_CACHE_SECONDS, and every token is refused (503)
  while the last successful pull is older than that. A token that is not a JWT (an opaque one issued before
  users switched format) is asked over REST.

Each answers a `Principal`, or None for a token users does not know as valid, and raises `ServiceUnavailable`
when users does not answer: the verifier then fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote

import aiohttp
import grpc

from skuflow.auth import signed_tokens
from skuflow.auth.v1 import auth_pb2, auth_pb2_grpc
from skuflow.messaging import current_flow
from skuflow.platform.auth import Principal
from skuflow.platform.background import Periodic
from skuflow.platform.http import ServiceUnavailable, call_json
from skuflow.platform.settings import Settings

log = logging.getLogger("skuflow.auth")

GRPC_DEADLINE = 2.0  # seconds for one Verify call: a lookup by primary key, answered in about a millisecond
GRPC_ATTEMPTS = 2  # a call that could not reach users is tried once more, after RETRY_PAUSE
RETRY_PAUSE = 0.05
# After users was unreachable, gRPC waits before it tries to connect again (1 s, growing 1.6x up to 120 s by
# default), and a call meanwhile fails at once: back within a second of users, as REST is.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _flow_metadata() -> tuple[tuple[str, str], ...]:
    """The flow's correlation id, as REST calls carry it in X-Correlation-ID."""
    flow = current_flow()
    return (("x-correlation-id", flow.correlation_id),) if flow is not None else ()


KEYS_REFETCH_PAUSE = 1.0  # a token naming an unknown key fetches the key set again at most this often
REVOCATION_PAGES = 100  # at most this many pages in one pull (a page holds 1,000)
FULL_PULL_EVERY = 10  # every tenth pull asks for every revocation not yet expired


class Ask(Protocol):
    async def __call__(self, token: str) -> Principal | None: ...

    def revoked(self, principal: Principal) -> bool:
        """Whether a principal answered before has been revoked since, as far as known without a call."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def ask_users(settings: Settings, session: aiohttp.ClientSession) -> Ask:
    """The transport SKUFLOW_AUTH_TRANSPORT names."""
    if settings.auth_transport == "grpc":
        trusted = settings.users_grpc_ca.read_bytes() if settings.users_grpc_ca is not None else None
        return GrpcAsk(settings.users_grpc, trusted)
    if settings.auth_transport == "local":
        return LocalAsk(settings.users_url, session, settings.auth_cache_seconds)
    return RestAsk(settings.users_url, session)


class _Asking:
    """For the transports that ask users each time: a cached answer lasts until the cache's bound."""

    def revoked(self, principal: Principal) -> bool:
        return False

    async def start(self) -> None:
        """Nothing to do before the first call."""


class RestAsk(_Asking):
    def __init__(self, users_url: str, session: aiohttp.ClientSession) -> None:
        self.url = f"{users_url.rstrip('/')}/v1/auth/verify"
        self.session = session

    async def __call__(self, token: str) -> Principal | None:
        status, body = await call_json(self.session, "POST", self.url, json={"token": token})
        if status != 200 or not isinstance(body, dict):
            raise ServiceUnavailable(f"users answered {status} to a token verification")
        if body.get("active") is not True:
            return None
        try:
            return Principal(sub=str(body["sub"]), scopes=frozenset(str(body["scope"]).split()), exp=int(body["exp"]))
        except (KeyError, TypeError, ValueError):
            raise ServiceUnavailable(f"users answered a token verification without its fields: {body!r}") from None

    async def close(self) -> None:
        """The session is the runtime's, closed with it."""


class GrpcAsk(_Asking):
    def __init__(self, address: str, trusted: bytes | None = None) -> None:
        """`trusted`: CA certificates (PEM) to trust, and TLS; None: plain HTTP/2."""
        self.address = address
        if trusted is None:
            self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=trusted)
            self._channel = grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        self._verify = auth_pb2_grpc.AuthStub(self._channel).Verify

    async def __call__(self, token: str) -> Principal | None:
        for attempt in range(1, GRPC_ATTEMPTS + 1):
            try:
                reply: auth_pb2.VerifyResponse = await self._verify(
                    auth_pb2.VerifyRequest(token=token), timeout=GRPC_DEADLINE, metadata=_flow_metadata()
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < GRPC_ATTEMPTS:
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                raise ServiceUnavailable(
                    f"users answered gRPC {error.code().name} to a token verification at {self.address}"
                ) from None
            if not reply.active:
                return None
            return Principal(sub=reply.sub, scopes=frozenset(reply.scope.split()), exp=reply.exp)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def close(self) -> None:
        await self._channel.close()


class LocalAsk:
    def __init__(
        self,
        users_url: str,
        session: aiohttp.ClientSession,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        users = users_url.rstrip("/")
        self.jwks_url = f"{users}/.well-known/jwks.json"
        self.revocations_url = f"{users}/v1/auth/revocations"
        self.session = session
        self.fresh_for = cache_seconds
        self.clock = clock
        self.rest = RestAsk(users_url, session)  # for the tokens that are not JWTs
        self.keys = signed_tokens.KeySet()
        self.key_fetches = 0  # reads of the key set for a key id it did not hold (the pulls read it too)
        self._pulls = 0
        self._asked_for_key_at = float("-inf")  # the last read of the key set for a key id it did not hold
        self._fetching_keys: asyncio.Lock = asyncio.Lock()
        self._revoked: dict[str, int] = {}  # jti -> the token's expiry (unix seconds), after which it goes
        self._since: str | None = None
        self._pulled_at: float | None = None
        self._periodic = Periodic("token revocations pull", self.pull, cache_seconds / 3)

    async def start(self) -> None:
        await self._periodic.start()

    async def close(self) -> None:
        await self._periodic.stop()

    async def __call__(self, token: str) -> Principal | None:
        if not signed_tokens.looks_like_jwt(token):
            return await self.rest(token)
        self._must_be_fresh()
        try:
            claims = signed_tokens.verify(token, self.keys)
        except signed_tokens.UnknownKey as unknown:
            claims = await self._verify_with_new_keys(token, unknown.kid)
        if claims is None or claims.jti in self._revoked:
            return None
        return Principal(sub=claims.sub, scopes=frozenset(claims.scope.split()), exp=claims.exp, token_id=claims.jti)

    def revoked(self, principal: Principal) -> bool:
        if principal.token_id is None:
            return False  # an opaque token, asked over REST
        self._must_be_fresh()
        return principal.token_id in self._revoked

    async def pull(self) -> None:
        """Read the key set again (a retired key leaves it once users stops publishing it: a verifier must not
        trust it longer), and learn the revocations since the last pull; every FULL_PULL_EVERY pulls, all of
        them again, against a revocation a cursor missed (a users process's clock behind, a slow commit)."""
        await self._read_key_set()
        self._pulls += 1
        since = None if self._pulls % FULL_PULL_EVERY == 0 else self._since
        for _ in range(REVOCATION_PAGES):
            url = self.revocations_url if since is None else f"{self.revocations_url}?since={quote(since)}"
            status, body = await call_json(self.session, "GET", url)
            try:
                if status != 200:
                    raise ValueError(f"answered {status}")
                for revocation in body["revocations"]:
                    self._revoked[str(revocation["jti"])] = int(revocation["exp"])
                since, more = str(body["next"]), bool(body["more"])
            except (KeyError, TypeError, ValueError) as error:
                raise ServiceUnavailable(f"users' revocations ({url}) cannot be read: {error!r}") from None
            self._since = since
            if not more:
                break
        else:  # still behind: not fresh, so that every token waits (503) rather than pass unchecked
            log.warning("more than %d pages of revocations at %s: catching up", REVOCATION_PAGES, url)
            return
        now = time.time()
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp > now}
        self._pulled_at = self.clock()

    def _must_be_fresh(self) -> None:
        if self._pulled_at is None or self.clock() - self._pulled_at > self.fresh_for:
            raise ServiceUnavailable(
                f"users' revoked tokens were not pulled within {self.fresh_for:g} s ({self.revocations_url})"
            )

    async def _verify_with_new_keys(self, token: str, kid: str) -> signed_tokens.Claims | None:
        """Fetch the key set again (a key rotated in since), unless it was fetched a moment ago: then the key
        may be newer still, and the answer is "not now" (503), never "invalid" (401, remembered a while)."""
        async with self._fetching_keys:  # concurrent tokens of a new key make one fetch
            if kid not in self.keys:
                if self.clock() - self._asked_for_key_at < KEYS_REFETCH_PAUSE:
                    raise ServiceUnavailable(f"key {kid!r} is not in users' key set of a moment ago; try again")
                self.key_fetches += 1
                self._asked_for_key_at = self.clock()
                await self._read_key_set()
        try:
            return signed_tokens.verify(token, self.keys)
        except signed_tokens.UnknownKey:
            return None  # no key of users' has this id

    async def _read_key_set(self) -> None:
        status, body = await call_json(self.session, "GET", self.jwks_url)
        try:
            if status != 200:
                raise ValueError(f"answered {status}")
            keys = signed_tokens.KeySet.from_document(body)
        except ValueError as error:
            raise ServiceUnavailable(f"users' key set ({self.jwks_url}) cannot be read: {error}") from None
        if keys.kids != self.keys.kids:  # read at every pull: said only when it changed
            log.info("users' key set: %s", ", ".join(sorted(keys.kids)) or "empty")
        self.keys = keys
