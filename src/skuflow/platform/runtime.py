"""What every service runs beside its HTTP API, started and stopped in one place (eShop's ServiceDefaults).

A `ServiceRuntime` owns the service's database (migrated at start), its broker connection (topology
declared), its consumers (the service's routing table), the outbox relay, the process's HTTP client and
the token verifier. Start order: database, broker, HTTP client, relay, consumers, the service's own hooks;
stop in reverse, draining the consumers within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

import aiohttp
from fastapi import FastAPI
from sqlalchemy import Table

from skuflow.messaging import SKUFLOW, Broker, Subscription, create_broker
from skuflow.platform import telemetry
from skuflow.platform.auth import TokenVerifier, Verifier
from skuflow.platform.db import Database
from skuflow.platform.http import new_session
from skuflow.platform.metrics import QueueStates, Sampler, ServiceMetrics
from skuflow.platform.outbox import Outbox, OutboxRelay
from skuflow.platform.reconcile import Reconciliation
from skuflow.platform.settings import Settings, without_password
from skuflow.platform.token_transports import Ask, ask_users

log = logging.getLogger("skuflow.runtime")

Hook = Callable[[], Awaitable[None]]
Report = Callable[[], "Check | Awaitable[Check]"]


class Component(Protocol):
    """Something a service runs beside itself (a watcher, a sweeper, a reconciliation)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


READINESS_TIMEOUT = 2.0

# ok: works; degraded: trouble that does not make the service unready (CONTRACT section 7); down: the
# database or the broker cannot be reached, and the service is unready.
State = Literal["ok", "degraded", "down"]


class Check(NamedTuple):
    """One line of /readyz: its state, shown to anyone, and its details (counts, errors, hosts), shown only
    to the admin client, because they name internals an attacker could use."""

    state: State
    details: dict[str, Any]


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: Settings,
        db: Database,
        *,
        outbox_table: Table | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        """`verifier`: how the service checks the tokens it receives; by default, by asking users over HTTP
        (the users service passes its own, which looks in its database)."""
        self.name = name
        self.settings = settings
        self.db = db
        self.broker: Broker = create_broker(settings.broker_url, name, settings.broker_options())
        self.broker.tracing.use(telemetry.tracer(name, "skuflow.messaging"))
        telemetry.trace_database(db.engine, name)
        self.metrics = ServiceMetrics(name)
        self.metrics.watch_broker(self.broker.stats)
        # What /metrics shows of the database and the broker, read every SKUFLOW_METRICS_REFRESH_SECONDS.
        self.sampler = Sampler(self.metrics, settings.metrics_refresh_seconds)
        QueueStates(self.broker, lambda: (subscription.queue for subscription in self.subscriptions)).export(
            self.metrics, self.sampler
        )
        self.outbox = Outbox(db, outbox_table) if outbox_table is not None else None
        if self.outbox is not None:
            self._watch_outbox(self.outbox)
        self.relay: OutboxRelay | None = None
        self._local_verifier = verifier
        self.subscriptions: list[Subscription[Any]] = []
        self.on_start: list[Hook] = []
        self.on_stop: list[Hook] = []
        # The other lines of /readyz: trouble that does not make the service unready (CONTRACT section 7); a
        # report may be a coroutine function (one that asks the database).
        self.reports: dict[str, Report] = {}
        self.reconciliation: Reconciliation | None = None
        self._http: aiohttp.ClientSession | None = None
        self._verifier: Verifier | None = verifier
        self._ask: Ask | None = None  # how the verifier asks users, unless the service has its own verifier
        # Set when the service runs on sockets it inherited (a supervisor's worker, beside its siblings): a
        # port the service opens itself must then be shared too (SO_REUSEPORT).
        self.shares_ports = False
        if verifier is None:
            self._watch_token_cache()

    def _watch_outbox(self, outbox: Outbox) -> None:
        lag: dict[str, float] = {"backlog": 0, "lag": 0.0}

        async def read() -> None:
            lag["backlog"], lag["lag"] = await outbox.lag()

        self.sampler.reading("the outbox", read)
        self.metrics.watch_gauge(
            "skuflow_outbox_backlog_messages",
            "Outbox messages not published yet (all processes'), at the last reading",
            lambda: lag["backlog"],
        )
        self.metrics.watch_gauge(
            "skuflow_outbox_lag_seconds",
            "Age of the oldest outbox message not published yet (0 when none waits), at the last reading",
            lambda: lag["lag"],
        )

    def _watch_token_cache(self) -> None:
        def count(name: str) -> Callable[[], float]:
            return lambda: getattr(self._verifier, name, 0)

        self.metrics.watch_counter(
            "skuflow_token_cache_hits",
            "Tokens this process verified from its cache, without asking users",
            count("hits"),
        )
        self.metrics.watch_counter(
            "skuflow_token_cache_misses",
            "Tokens this process could not verify from its cache (it asked users, or joined a question in flight)",
            count("misses"),
        )

    def subscribe(self, subscriptions: Sequence[Subscription[Any]]) -> None:
        self.subscriptions.extend(subscriptions)

    def run_beside(self, component: Component, *, check: tuple[str, Report] | None = None) -> None:
        """Run `component` beside the service: started once the service is (in the order added), stopped
        before it stops (in the reverse order); `check`, its line in /readyz: a name and its report."""
        self.on_start.append(component.start)
        self.on_stop.append(component.stop)
        if check is not None:
            name, report = check
            self.reports[name] = report

    def reconcile_with(self, reconciliation: Reconciliation) -> None:
        """Run `reconciliation` every SKUFLOW_RECONCILE_SECONDS, and on demand (POST /v1/admin/reconcile)."""
        self.reconciliation = reconciliation

        def shown() -> Check:
            return Check("ok", {"repaired": reconciliation.repaired, "last": reconciliation.last})

        self.run_beside(reconciliation, check=("reconciliation", shown))

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._http

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._verifier

    async def start(self) -> None:
        database = f"SKUFLOW_{self.name.upper()}_DATABASE_URL={without_password(self.db.url)}"
        async with _naming(f"{self.name} cannot start: its database ({database})"):
            await self.db.migrate()
        broker = f"SKUFLOW_BROKER_URL={without_password(self.settings.broker_url)}"
        async with _naming(f"{self.name} cannot start: the broker ({broker})"):
            await self.broker.connect()
            await self.broker.declare(SKUFLOW)
        services = {name: getattr(self.settings, f"{name}_url") for name in ("inventory", "catalog", "users")}
        targets = {f"{urlsplit(url).hostname}:{urlsplit(url).port}": name for name, url in services.items()}
        self._http = new_session([self.metrics.client_trace(targets), *telemetry.http_client_tracing(self.name)])
        if self._local_verifier is None:
            self._ask = ask_users(self.settings, self._http)
            self._verifier = TokenVerifier(self._ask, self.settings.auth_cache_seconds, revoked=self._ask.revoked)
            await self._ask.start()
        if self.outbox is not None:
            self.relay = OutboxRelay(self.outbox, self.broker)
            self.relay.start()
            relay = self.relay
            self.metrics.watch_counter(
                "skuflow_outbox_relayed", "Outbox messages this process published", lambda: relay.published
            )
            self.metrics.watch_counter(
                "skuflow_outbox_refusals",
                "Times the broker refused an outbox message in this process (each is tried again with backoff)",
                lambda: relay.refusals_met,
            )
        for subscription in self.subscriptions:
            await self.broker.consume(subscription)
        for hook in self.on_start:
            await hook()
        await self.sampler.start()
        log.info("%s started", self.name)

    async def stop(self) -> None:
        """Stop in reverse order: hooks, consumers (draining), the relay (after its batch), connections."""
        try:
            await self.sampler.stop()
            for hook in reversed(self.on_stop):
                try:
                    await hook()
                except Exception:
                    log.exception("%s: a stop hook failed", self.name)
            for consumer in list(self.broker.consumers):
                await consumer.stop()
            if self.relay is not None:
                await self.relay.stop()
        finally:
            await self.broker.close()
            if self._ask is not None:
                await self._ask.close()
            if self._http is not None:
                await self._http.close()
            await self.db.close()
        log.info("%s stopped", self.name)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        try:
            await self.start()
        except BaseException:
            await self.stop()  # release whatever had started
            raise
        try:
            yield
        finally:
            await self.stop()

    async def _refusals(self) -> dict[str, Any] | str:
        assert self.relay is not None
        try:
            return await asyncio.wait_for(self.relay.refusals(), READINESS_TIMEOUT)
        except Exception as error:
            return f"unknown: {error!r}"

    async def readiness(self) -> tuple[bool, dict[str, Check]]:
        """Every check, by name, and whether the service is ready: only the database and the broker decide."""
        checks: dict[str, Check] = {}
        try:
            await asyncio.wait_for(self.db.ping(), READINESS_TIMEOUT)
            checks["database"] = Check("ok", {})
        except Exception as error:
            checks["database"] = Check("down", {"error": f"unreachable: {error!r}"})
        checks["broker"] = Check("ok", {}) if self.broker.is_connected else Check("down", {"error": "unreachable"})
        ready = checks["database"].state == "ok" and checks["broker"].state == "ok"
        if self.relay is not None:
            refused = await self._refusals()
            outbox = {
                "published": self.relay.published,
                "relay": "running" if self.relay.running else "stopped",
                "last_error": self.relay.last_error,
                "refused": refused,
            }
            # Messages the broker refused wait and are tried again: late, not lost.
            troubled = (
                not self.relay.running
                or self.relay.last_error is not None
                or not isinstance(refused, dict)
                or refused.get("messages", 0) > 0
            )
            checks["outbox"] = Check("degraded" if troubled else "ok", outbox)
        for name, report in self.reports.items():
            check = report()
            checks[name] = await check if inspect.isawaitable(check) else check
        return ready, checks


@contextlib.asynccontextmanager
async def _naming(what: str) -> AsyncIterator[None]:
    """Log one line naming what failed and why, before the traceback uvicorn logs for a failed start-up."""
    try:
        yield
    except Exception as error:
        log.error("%s: %s", what, _in_words(error))
        raise


def _in_words(error: BaseException) -> str:
    """The error, and its innermost cause that says something ("database "x" does not exist"): a timeout's
    cause is a bare cancellation, which says nothing."""
    outer, inner = f"{type(error).__name__}: {error}", None
    for _ in range(20):  # a chain is short; the bound guards against a cycle
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if cause is None or isinstance(cause, asyncio.CancelledError) or not str(cause):
            break
        error = inner = cause
    return outer if inner is None else f"{outer} (cause: {type(inner).__name__}: {inner})"
