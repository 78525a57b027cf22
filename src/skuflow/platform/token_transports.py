"""How a service asks users "is this token valid, and for whom?" (SKUFLOW_AUTH_TRANSPORT): the question itself,
without the cache, which `auth.TokenVerifier` puts in front of any of them.

- `RestAsk`: `POST /v1/auth/verify` on users' HTTP API (JSON; retries a connection error or a 502/503/504).
- `GrpcAsk`: `skuflow.auth.v1.Auth/Verify` on SKUFLOW_USERS_GRPC, over one long-lived HTTP/2 channel per
  process, each call with a deadline, one more try when users cannot be reached.

Each answers a `Principal`, or None for a token users does not know as valid, and raises `ServiceUnavailable`
when users does not answer: the verifier then fails closed.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
import grpc

from skuflow.auth.v1 import auth_pb2, auth_pb2_grpc
from skuflow.messaging import current_flow
from skuflow.platform.auth import Principal
from skuflow.platform.http import ServiceUnavailable, call_json
from skuflow.platform.settings import Settings

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


class Ask(Protocol):
    async def __call__(self, token: str) -> Principal | None: ...

    async def close(self) -> None: ...


def ask_users(settings: Settings, session: aiohttp.ClientSession) -> Ask:
    """The transport SKUFLOW_AUTH_TRANSPORT names."""
    if settings.auth_transport == "grpc":
        trusted = settings.users_grpc_ca.read_bytes() if settings.users_grpc_ca is not None else None
        return GrpcAsk(settings.users_grpc, trusted)
    return RestAsk(settings.users_url, session)


class RestAsk:
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


class GrpcAsk:
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
