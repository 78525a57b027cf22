"""The users service's gRPC server: `skuflow.auth.v1.Auth/Verify` (the fast path, CONTRACT section 3) and the
standard gRPC health protocol (`grpc.health.v1.Health`), on SKUFLOW_USERS_GRPC, in the process of its HTTP API.

`Verify` answers exactly what `POST /v1/auth/verify` answers (`AccessTokens.verify`).
It is part of the service's lifespan: it starts with the service, before the HTTP API listens, and stops
after the HTTP API has drained (health NOT_SERVING, then up to the shutdown grace for the calls in flight).
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from skuflow.auth.v1 import auth_pb2, auth_pb2_grpc
from skuflow.messaging import flow_scope, new_id
from skuflow.platform.runtime import Check, ServiceRuntime
from skuflow.platform.web import is_id
from skuflow.users.access_tokens import AccessTokens

log = logging.getLogger("skuflow.users.grpc")

SERVICE = "skuflow.auth.v1.Auth"


class _Auth(auth_pb2_grpc.AuthServicer):
    def __init__(self, tokens: AccessTokens) -> None:
        self.tokens = tokens

    async def Verify(
        self, request: auth_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyResponse:
        # The caller's flow, as X-Correlation-ID carries it over HTTP; one that breaks the rule is replaced.
        given = dict(context.invocation_metadata() or ()).get("x-correlation-id")
        correlation_id = given if isinstance(given, str) and is_id(given) else new_id()
        with flow_scope(correlation_id):
            active = await self.tokens.verify(request.token)
        if active is None:
            return auth_pb2.VerifyResponse(active=False)
        return auth_pb2.VerifyResponse(active=True, sub=active.sub, scope=active.scope, exp=active.exp)


class AuthServer:
    """A component of the users runtime (`run_beside`): the gRPC server on SKUFLOW_USERS_GRPC ("host:port")."""

    def __init__(self, runtime: ServiceRuntime, tokens: AccessTokens) -> None:
        self.runtime = runtime
        self.tokens = tokens
        self.address = runtime.settings.users_grpc
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None

    async def start(self) -> None:
        # The workers of `skuflow serve users --workers N` share the port (SO_REUSEPORT; the kernel spreads the
        # connections); otherwise a port already taken is an error at start, as for HTTP.
        share = self.runtime.shares_ports
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(share))])
        health = health_aio.HealthServicer()
        auth_pb2_grpc.add_AuthServicer_to_server(_Auth(self.tokens), server)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        settings = self.runtime.settings
        try:
            if settings.users_grpc_cert is not None and settings.users_grpc_key is not None:
                pair = (settings.users_grpc_key.read_bytes(), settings.users_grpc_cert.read_bytes())
                server.add_secure_port(self.address, grpc.ssl_server_credentials([pair]))
            else:
                server.add_insecure_port(self.address)
        except RuntimeError as error:  # grpcio raises when it cannot bind
            await server.stop(None)
            raise OSError(f"users cannot listen for gRPC on {self.address} (SKUFLOW_USERS_GRPC): {error}") from None
        await server.start()
        self._server, self._health = server, health
        for name in ("", SERVICE):  # "": the server as a whole
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC %s and health on %s", SERVICE, self.address)

    async def stop(self) -> None:
        if self._server is None or self._health is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.runtime.settings.shutdown_grace_seconds)
        self._server = self._health = None

    def check(self) -> Check:
        if self._server is None:
            return Check("degraded", {"address": self.address, "error": "not serving"})
        return Check("ok", {"address": self.address, "tls": self.runtime.settings.users_grpc_cert is not None})
