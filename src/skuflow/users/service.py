"""The users service's wiring: its database, its runtime, the built-in clients and the HTTP app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from skuflow.messaging import routes
from skuflow.platform import telemetry
from skuflow.platform.availability import InventoryAvailability
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.settings import PREFIX, Settings, SettingsError
from skuflow.platform.web import create_app
from skuflow.users import accounts, db, passwords, rate_limits
from skuflow.users.access_tokens import AccessTokens, LocalVerifier
from skuflow.users.api import NoStore, auth_router, keys_router, revocation_router, users_router
from skuflow.users.consumers import UsersConsumers
from skuflow.users.grpc_api import AuthServer
from skuflow.users.mailer import Mailer
from skuflow.users.messages import SkuProcessed, UpdateWishlistsForSku
from skuflow.users.reconcile import reconciliation
from skuflow.users.signing_keys import SigningKeys
from skuflow.users.wishlist_api import wishlist_router

MIGRATIONS = Path(__file__).parent / "migrations"

DESCRIPTION = (
    "Users, clients and tokens: public sign-up, an OAuth 2.0 token endpoint (password and client_credentials "
    "grants, RFC 6749) and token verification for the other services (RFC 7662 style); wishlists, and an email "
    "to each user whose wishlisted item becomes available."
)
RATE_WINDOW_SECONDS = 60.0


def build_app(settings: Settings) -> FastAPI:
    secrets = client_secrets(settings)
    database = Database(settings.database_url("users"), MIGRATIONS)
    keys = SigningKeys(database, settings.token_ttl_seconds, create=settings.token_format == "jwt")
    tokens = AccessTokens(database, keys, settings.token_format, settings.token_ttl_seconds)
    # Users checks the tokens it receives itself, not over HTTP.
    runtime = ServiceRuntime("users", settings, database, outbox_table=db.outbox, verifier=LocalVerifier(tokens))
    runtime.run_beside(keys)  # first: a token may be issued as soon as the API listens
    mailer = Mailer(
        database,
        settings.smtp_url,
        settings.catalog_url,
        http=lambda: runtime.http,
        connections=settings.smtp_connections,
        tracer=telemetry.tracer("users", "skuflow.users.mailer"),
    )
    inventory = InventoryAvailability(settings.inventory_url, lambda: runtime.http)
    replies = StepReplies("users", runtime.broker.publish_many)
    consumers = UsersConsumers(database, inventory, replies, emails_due=mailer.wake)
    runtime.subscribe(
        [
            routes.USERS_SKU_PROCESSED.bind(SkuProcessed, consumers.learn_availability),
            routes.USERS_UPDATE_WISHLISTS_FOR_SKU.bind(UpdateWishlistsForSku, consumers.update_wishlists),
        ]
    )

    async def create_clients() -> None:
        await accounts.ensure_clients(database, secrets)

    runtime.on_start.append(create_clients)
    runtime.run_beside(mailer, check=("email", mailer.check))
    auth_server = AuthServer(runtime, tokens)
    runtime.run_beside(auth_server, check=("grpc", auth_server.check))
    every = timedelta(seconds=settings.reconcile_seconds)
    runtime.reconcile_with(reconciliation(database, every, inventory, mailer.wake))
    runtime.metrics.watch_counter("skuflow_emails_sent", "Wishlist emails this process sent", lambda: mailer.sent)
    runtime.metrics.watch_labelled(
        "counter",
        "skuflow_email_failures",
        "Wishlist emails this process tried and did not get sent, by kind: transient (the server away, a 4xx "
        "answer, a timeout: tried again) or permanent (a 5xx refusal, an email that cannot be built)",
        ("kind",),
        lambda: {(kind,): count for kind, count in mailer.failures.items()},
    )
    runtime.sampler.gauge(
        "skuflow_emails_pending",
        "Wishlist emails waiting to be sent (due now or at their next try), at the last reading",
        mailer.pending,
    )
    runtime.metrics.watch_counter(
        "skuflow_argon2_refused",
        "Sign-ups and token requests answered 503 because the password-hashing queue was full",
        lambda: passwords.queue.refused,
    )
    limiter = rate_limits.TokenAttempts(settings.token_attempts_per_minute, RATE_WINDOW_SECONDS)
    sign_ups = rate_limits.SlidingWindow(settings.sign_ups_per_minute, RATE_WINDOW_SECONDS)
    app = create_app(
        runtime,
        [
            users_router(sign_ups),
            auth_router(limiter, tokens),
            revocation_router(tokens),
            keys_router(keys),
            wishlist_router(),
        ],
        title="skuflow users",
        description=DESCRIPTION,
    )
    app.add_middleware(NoStore, paths=("/v1/auth/token", "/v1/auth/verify"))
    return app


def client_secrets(settings: Settings) -> dict[str, str]:
    """The built-in clients' secrets; a service started on its own refuses to start without them."""
    configured = {"warehouse": settings.warehouse_secret, "admin": settings.admin_secret}
    secrets: dict[str, str] = {}
    for client_id, secret in configured.items():
        if secret is None or not secret.get_secret_value():
            variable = f"{PREFIX}{client_id.upper()}_SECRET"
            raise SettingsError(f"{variable} is not set: the users service needs the {client_id} client's secret")
        secrets[client_id] = secret.get_secret_value()
    return secrets
