"""`skuflow compare`: choreography and orchestration side by side, on the same workload, measured.

For each mode, a fresh system in this process (the three services on free ports of 127.0.0.1, an SMTP sink,
an FTP server) on the configured broker and databases (memory + SQLite by default; RabbitMQ and PostgreSQL
when given). Setup, not measured: N products at 0 on hand, M users each wishing for K of them. Then the
measured burst: half the SKUs reported in stock over HTTP, one report each, and the other half in one FTP
snapshot; every SKU thus becomes available once, and every wish is due one email. The mode has converged
when catalog's availability equals inventory's for every SKU, the SMTP sink holds every due email, and no
flow is running (in orchestration the orchestrator has had every step's reply).

Every count comes from the system itself, as an operator would read it: each service's `/metrics`
(deliveries per queue, publishes per route, HTTP calls per target and route, flow steps resent and failed),
taken before and after the burst. Latency is from a report's 202 answer to catalog's
`availability_checked_at` and to the sink's acceptance of the email, both recorded by the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from skuflow.bench.memory import peak_resident
from skuflow.embedded.ftp import FtpServer
from skuflow.embedded.smtp import SmtpSink
from skuflow.messaging import SKUFLOW, BrokerOptions, create_broker, wait_queue
from skuflow.platform.serving import bind
from skuflow.platform.settings import Settings
from skuflow.system import SERVICES, serving

MODES = ("choreography", "orchestration")
PASSWORD = "compare-password"
SETUP_TIMEOUT = 120.0  # seconds for the setup to settle (not measured; `Workload.timeout` bounds the burst)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Workload:
    skus: int = 100
    users: int = 20
    wishes: int = 5  # SKUs each user wishes for
    concurrency: int = 10  # HTTP reports in flight
    timeout: float = 60.0  # seconds for a mode to converge


class NotConverged(Exception):
    """A mode did not converge within the bound; the message says what was missing."""


@dataclass
class ModeFigures:
    mode: str
    converge_seconds: float = 0.0
    published: dict[str, float] = field(default_factory=dict)  # "exchange -> routing key (type)" -> messages
    delivered: dict[str, float] = field(default_factory=dict)  # queue -> deliveries
    retried: float = 0.0  # deliveries retried or dead-lettered by the messaging layer
    dead_lettered: float = 0.0
    steps_resent: float = 0.0  # orchestration: commands sent again, unanswered
    steps_failed: float = 0.0
    http_calls: dict[str, float] = field(default_factory=dict)  # "service -> target route" -> requests
    catalog_latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p99
    email_latency_ms: dict[str, float] = field(default_factory=dict)
    emails: int = 0
    peak_memory_mb: float = 0.0  # this process, all services in it
    knows: dict[str, list[str]] = field(default_factory=dict)  # service -> queues consumed, endpoints called


@dataclass
class Comparison:
    workload: Workload
    broker: str
    databases: str
    modes: list[ModeFigures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload.__dict__,
            "broker": self.broker,
            "databases": self.databases,
            "modes": {figures.mode: figures.__dict__ for figures in self.modes},
        }


Progress = Callable[[str, int, int], None]  # phase, done, total


async def run(
    workload: Workload, broker_url: str, postgres_url: str | None, progress: Progress, seed: int = 7
) -> Comparison:
    databases = "postgresql" if postgres_url else "sqlite"
    comparison = Comparison(workload, broker_url.split("://", 1)[0], databases)
    for mode in MODES:
        comparison.modes.append(await _one_mode(mode, workload, broker_url, postgres_url, progress, seed))
    return comparison


async def _one_mode(
    mode: str, workload: Workload, broker_url: str, postgres_url: str | None, progress: Progress, seed: int
) -> ModeFigures:
    rng = random.Random(seed)  # the same workload in both modes
    skus = [f"SKU-{n:05d}" for n in range(workload.skus)]
    with tempfile.TemporaryDirectory(prefix=f"skuflow-compare-{mode}-") as scratch:
        async with _system(mode, Path(scratch), broker_url, postgres_url) as system:
            driver = _Driver(system, workload, lambda phase, done, total: progress(f"{mode}: {phase}", done, total))
            await driver.setup(skus, rng)
            before = await system.settled()
            with peak_resident(every=0.02) as peak:
                started = time.monotonic()
                answers = await driver.burst(skus)
                await driver.converge(skus, started)
                elapsed = time.monotonic() - started
            after = await system.settled()
            figures = _figures(mode, before, after)
            figures.converge_seconds = elapsed
            figures.peak_memory_mb = peak()[0]
            await driver.latencies(figures, answers)
            return figures


@dataclass
class _System:
    settings: Settings
    urls: dict[str, str]
    smtp: SmtpSink
    ftp: FtpServer
    http: aiohttp.ClientSession

    async def settled(self, within: float = SETUP_TIMEOUT) -> dict[str, Samples]:
        """The services' metrics once nothing moves: every queue empty (their retry queues too), every
        delivery settled, and the deliveries the same in two looks in a row (converged is not yet quiet: a
        reply that changes nothing anyone waits for may still be on its way)."""
        deadline = time.monotonic() + within
        previous: dict[Any, float] | None = None
        queues = [
            name
            for queue in SKUFLOW.queues
            for name in (queue.name, *(wait_queue(queue.name, delay) for delay in self.settings.retry_delays))
        ]
        async with create_broker(self.settings.broker_url, "compare-observer", BrokerOptions()) as broker:
            while True:
                scraped = await self.scrape()
                deliveries = {
                    (service, labels): value
                    for service, samples in scraped.items()
                    for (name, labels), value in samples.items()
                    if name == "skuflow_queue_messages_total"
                }
                empty = all([await broker.depth(name) == 0 for name in queues])
                if empty and deliveries == previous and _all_settled(deliveries):
                    return scraped
                if time.monotonic() > deadline:
                    raise NotConverged(f"the system did not come to rest within {within:g} s")
                previous = deliveries
                await asyncio.sleep(0.1)

    async def scrape(self) -> dict[str, Samples]:
        scraped = {}
        for name, url in self.urls.items():
            async with self.http.get(f"{url}/metrics") as response:
                text = await response.text()
            scraped[name] = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        return scraped


@contextlib.asynccontextmanager
async def _system(mode: str, scratch: Path, broker_url: str, postgres_url: str | None) -> AsyncIterator[_System]:
    smtp = SmtpSink()
    await smtp.start()
    ftp = FtpServer(scratch / "ftp", "warehouse", uuid.uuid4().hex)
    ftp.start()
    sockets = {name: bind("127.0.0.1", 0) for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{sock.getsockname()[1]}" for name, sock in sockets.items()}
    broker = f"memory://compare-{uuid.uuid4().hex}" if broker_url.startswith("memory") else broker_url
    async with _databases(postgres_url) as database_urls:
        values: dict[str, Any] = {
            "mode": mode,
            "broker_url": broker,
            "data_dir": scratch,
            "smtp_url": smtp.url,
            "warehouse_ftp_url": ftp.url("/outbox/snapshot.csv"),
            "warehouse_ftp_poll_seconds": 0.2,
            "warehouse_secret": SecretStr(PASSWORD),
            "admin_secret": SecretStr(PASSWORD),
            "token_attempts_per_minute": 10_000,
            "sign_ups_per_minute": 10_000,
            **{f"{name}_url": url for name, url in urls.items()},
            **{f"{name}_database_url": url for name, url in database_urls.items()},
        }
        settings = Settings(**values)
        if not broker.startswith("memory"):
            await _purge(broker)
        try:
            async with (
                serving(list(SERVICES.values()), settings, [sockets[name] for name in SERVICES]),
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            ):
                yield _System(settings, urls, smtp, ftp, http)
        finally:
            for sock in sockets.values():  # closed already, unless the services never started
                sock.close()
            ftp.stop()
            await smtp.stop()


@contextlib.asynccontextmanager
async def _databases(postgres_url: str | None) -> AsyncIterator[dict[str, str]]:
    """Nothing for SQLite (the data directory); else a scratch PostgreSQL database per service, dropped after."""
    if postgres_url is None:
        yield {}
        return
    server = make_url(postgres_url)
    admin = await asyncpg.connect(_url(server.set(drivername="postgresql")))
    names = {service: f"skuflow_compare_{service}_{uuid.uuid4().hex[:8]}" for service in SERVICES}
    try:
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield {service: _url(server.set(database=name)) for service, name in names.items()}
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _url(url: Any) -> str:
    return str(url.render_as_string(hide_password=False))


async def _purge(broker_url: str) -> None:
    """Leftovers of earlier runs would be counted and would disturb convergence: empty the system's queues."""
    import aio_pika

    async with create_broker(broker_url, "compare", BrokerOptions()) as broker:
        await broker.declare(SKUFLOW)  # so that every queue exists (a first run on this broker)
    connection = await aio_pika.connect(broker_url)
    async with connection, connection.channel() as channel:
        for queue in SKUFLOW.queues:
            await (await channel.get_queue(queue.name, ensure=False)).purge()


class _Driver:
    """The warehouse, the users and the shop's admin, through the system's own APIs."""

    def __init__(self, system: _System, workload: Workload, progress: Progress) -> None:
        self.system = system
        self.workload = workload
        self.progress = progress
        self.http = system.http
        self.urls = system.urls
        self.tokens: dict[str, str] = {}
        self.due_emails = 0

    async def token(self, client: str) -> str:
        if client not in self.tokens:
            form = {"grant_type": "client_credentials", "client_id": client, "client_secret": PASSWORD}
            answer = await self._post(f"{self.urls['users']}/v1/auth/token", data=form)
            self.tokens[client] = answer["access_token"]
        return self.tokens[client]

    async def setup(self, skus: list[str], rng: random.Random) -> None:
        admin = {"Authorization": f"Bearer {await self.token('admin')}"}
        warehouse = {"Authorization": f"Bearer {await self.token('warehouse')}"}
        total = len(skus) + 1 + self.workload.users
        done = 0
        for sku in skus:  # products, so that catalog lists their availability
            body = {"name": f"Item {sku}", "price": "1.00"}
            await self._request("PUT", f"{self.urls['catalog']}/v1/products/{sku}", json=body, headers=admin)
            done += 1
            self.progress("setup", done, total)
        report = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": 0} for sku in skus]}
        await self._post(f"{self.urls['inventory']}/v1/stock", json=report, headers=warehouse)
        await self._until(lambda: self._catalog_matches(skus), "catalog to learn the SKUs at 0")
        await self._until(self._flows_finished, "the flows of the SKUs at 0 to finish")  # counted before the burst
        done += 1
        self.progress("setup", done, total)
        for n in range(self.workload.users):
            email = f"user{n}@example.com"
            user = await self._post(
                f"{self.urls['users']}/v1/users", json={"email": email, "name": f"User {n}", "password": PASSWORD}
            )
            form = {"grant_type": "password", "username": email, "password": PASSWORD}
            token = (await self._post(f"{self.urls['users']}/v1/auth/token", data=form))["access_token"]
            for sku in rng.sample(skus, min(self.workload.wishes, len(skus))):
                url = f"{self.urls['users']}/v1/users/{user['id']}/wishlist/{sku}"
                await self._request("PUT", url, headers={"Authorization": f"Bearer {token}"})
                self.due_emails += 1
            done += 1
            self.progress("setup", done, total)

    async def burst(self, skus: list[str]) -> dict[str, float]:
        """Half the SKUs over HTTP (one report each, some in flight at once), the rest in one FTP snapshot.
        Answers each HTTP-reported SKU's answer time (epoch seconds)."""
        by_http, by_ftp = skus[: len(skus) // 2], skus[len(skus) // 2 :]
        headers = {"Authorization": f"Bearer {await self.token('warehouse')}"}
        answers: dict[str, float] = {}
        gate = asyncio.Semaphore(self.workload.concurrency)

        async def report(sku: str) -> None:
            async with gate:
                body = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": 5}]}
                await self._post(f"{self.urls['inventory']}/v1/stock", json=body, headers=headers)
                answers[sku] = time.time()
                self.progress("burst", len(answers), len(skus))

        await asyncio.gather(*(report(sku) for sku in by_http))
        snapshot = self.system.ftp.root / "outbox" / "snapshot.csv"
        partial = snapshot.with_suffix(".partial")
        partial.write_text("warehouse_id,sku,on_hand\n" + "".join(f"WH-1,{sku},5\n" for sku in by_ftp))
        partial.replace(snapshot)  # appears whole, as an upload under a temporary name does
        self.progress("burst", len(skus), len(skus))
        return answers

    async def converge(self, skus: list[str], started: float) -> None:
        async def converged() -> bool:
            matching = await self._catalog_matches(skus, available=True)
            emails = len(self.system.smtp.mails)
            self.progress("converge", matching + emails, len(skus) + self.due_emails)
            # An orchestrated flow has not converged before its orchestrator has every step's reply.
            return matching == len(skus) and emails >= self.due_emails and await self._flows_finished()

        remaining = self.workload.timeout - (time.monotonic() - started)
        try:
            await self._until(converged, "convergence", remaining)
        except NotConverged:
            matching = await self._catalog_matches(skus, available=True)
            raise NotConverged(
                f"{self.system.settings.mode} did not converge within {self.workload.timeout:g} s: catalog matched "
                f"inventory for {matching} of {len(skus)} SKUs, the SMTP sink had {len(self.system.smtp.mails)} of "
                f"{self.due_emails} due emails"
            ) from None

    async def latencies(self, figures: ModeFigures, answers: dict[str, float]) -> None:
        checked = {item["sku"]: item for item in await self._all(f"{self.urls['catalog']}/v1/products")}
        to_catalog = [
            (datetime.fromisoformat(checked[sku]["availability_checked_at"]).timestamp() - answered) * 1000
            for sku, answered in answers.items()
            if checked.get(sku, {}).get("availability_checked_at")
        ]
        mails = [mail for mail in self.system.smtp.mails if mail.subject.startswith("Item ")]
        to_email = [
            (mail.received_at - answers[sku]) * 1000 for mail in mails if (sku := mail.subject.split()[1]) in answers
        ]
        # The answer's time is taken when the driver has read it: in one process the system may already have
        # moved on by then, so a latency can come out a little below zero; it counts as zero.
        figures.catalog_latency_ms = _percentiles([max(0.0, value) for value in to_catalog])
        figures.email_latency_ms = _percentiles([max(0.0, value) for value in to_email])
        figures.emails = len(self.system.smtp.mails)

    async def _catalog_matches(self, skus: list[str], available: bool = False) -> int:
        """SKUs whose availability in catalog is inventory's, at inventory's revision (and, if asked, true)."""
        inventory = {item["sku"]: item for item in await self._all(f"{self.urls['inventory']}/v1/skus")}
        catalog = {item["sku"]: item for item in await self._all(f"{self.urls['catalog']}/v1/products")}
        return sum(
            1
            for sku in skus
            if sku in inventory
            and sku in catalog
            and catalog[sku]["availability_revision"] == inventory[sku]["revision"]
            and catalog[sku]["available"] == inventory[sku]["available"]
            and (not available or inventory[sku]["available"])
        )

    async def _flows_finished(self) -> bool:
        """No flow is running (always so in choreography, which has none)."""
        headers = {"Authorization": f"Bearer {await self.token('warehouse')}"}
        url = f"{self.urls['inventory']}/v1/flows?status=running&limit=1"
        return not (await self._request("GET", url, headers=headers))["items"]

    async def _all(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self._request("GET", f"{url}?limit=500" + (f"&cursor={cursor}" if cursor else ""))
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def _until(self, condition: Callable[[], Any], what: str, within: float = SETUP_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while not await condition():
            if time.monotonic() > deadline:
                raise NotConverged(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def _post(self, url: str, **kwargs: Any) -> Any:
        return await self._request("POST", url, **kwargs)

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        async with self.http.request(method, url, **kwargs) as response:
            body = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(f"{method} {url} answered {response.status}: {body}")
            return body


def _all_settled(deliveries: dict[Any, float]) -> bool:
    """Each queue's deliveries were all acked, retried or dead-lettered: none is in a handler."""
    outcomes: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (service, labels), value in deliveries.items():
        fields = dict(labels)
        outcomes[service, fields["queue"]][fields["outcome"]] = value
    return all(
        counts.get("delivered", 0) == sum(counts.get(name, 0) for name in ("acked", "retried", "dead_lettered"))
        for counts in outcomes.values()
    )


def _figures(mode: str, before: dict[str, Samples], after: dict[str, Samples]) -> ModeFigures:
    figures = ModeFigures(mode)

    def deltas(name: str) -> Iterator[tuple[str, dict[str, str], float]]:
        for service, samples in after.items():
            for (sample, labels), value in samples.items():
                if sample == name:
                    change = value - before.get(service, {}).get((sample, labels), 0.0)
                    if change:
                        yield service, dict(labels), change

    consumed: dict[str, set[str]] = defaultdict(set)
    for _, labels, change in deltas("skuflow_published_messages_total"):
        route = f"{labels['exchange']} -> {labels['routing_key'] or '(fanout)'} ({labels['type']})"
        figures.published[route] = figures.published.get(route, 0) + change
    for service, labels, change in deltas("skuflow_queue_messages_total"):
        queue, outcome = labels["queue"], labels["outcome"]
        consumed[service].add(f"queue {queue}")
        if outcome == "delivered":
            figures.delivered[queue] = figures.delivered.get(queue, 0) + change
        elif outcome == "retried":
            figures.retried += change
        elif outcome == "dead_lettered":
            figures.dead_lettered += change
    for service, labels, change in deltas("skuflow_http_client_requests_total"):
        call = f"{service} -> {labels['target']} {labels['method']} {labels['route']}"
        figures.http_calls[call] = figures.http_calls.get(call, 0) + change
        consumed[service].add(f"calls {labels['target']} {labels['method']} {labels['route']}")
    figures.steps_resent = sum(change for _, _, change in deltas("skuflow_flow_steps_resent"))
    figures.steps_failed = sum(change for _, _, change in deltas("skuflow_flow_steps_failed"))
    figures.knows = {service: sorted(things) for service, things in sorted(consumed.items())}
    return figures


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "count": 0}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "count": len(ordered),
    }


def rows(comparison: Comparison) -> list[tuple[str, list[str]]]:
    """The comparison as (figure, one value per mode) rows, for the table and the Markdown."""
    modes = comparison.modes

    def each(read: Callable[[ModeFigures], Any]) -> list[str]:
        return [_shown(read(figures)) for figures in modes]

    def keys(read: Callable[[ModeFigures], dict[str, Any]]) -> list[str]:
        return sorted({key for figures in modes for key in read(figures)})

    def breakdown(read: Callable[[ModeFigures], dict[str, float]]) -> list[tuple[str, list[str]]]:
        return [(f"  {key}", [_shown(read(f).get(key, 0)) for f in modes]) for key in keys(read)]

    table: list[tuple[str, list[str]]] = [
        ("time to converge (s)", each(lambda f: round(f.converge_seconds, 2))),
        ("messages published", each(lambda f: sum(f.published.values()))),
    ]
    table += breakdown(lambda f: f.published)
    table.append(("deliveries", each(lambda f: sum(f.delivered.values()))))
    table += breakdown(lambda f: f.delivered)
    table.append(("HTTP calls between services", each(lambda f: sum(f.http_calls.values()))))
    table += breakdown(lambda f: f.http_calls)
    table += [
        ("report -> catalog updated, p50 / p99 (ms)", each(lambda f: _pair(f.catalog_latency_ms))),
        ("report -> email accepted, p50 / p99 (ms)", each(lambda f: _pair(f.email_latency_ms))),
        ("emails accepted", each(lambda f: f.emails)),
        ("deliveries retried / dead-lettered", each(lambda f: f"{f.retried:g} / {f.dead_lettered:g}")),
        ("flow steps resent / failed", each(lambda f: f"{f.steps_resent:g} / {f.steps_failed:g}")),
        ("peak memory, whole process (MB)", each(lambda f: round(f.peak_memory_mb))),
    ]
    for service in keys(lambda f: f.knows):
        table.append((f"{service} used", ["; ".join(f.knows.get(service, [])) or "-" for f in modes]))
    return table


def table(comparison: Comparison) -> Any:
    from rich.table import Table

    workload = comparison.workload
    title = (
        f"skuflow compare: {workload.skus} SKUs, {workload.users} users x {workload.wishes} wishes, "
        f"{comparison.broker} + {comparison.databases}"
    )
    result = Table(title=title)
    result.add_column("figure")
    for figures in comparison.modes:
        result.add_column(figures.mode, justify="right")
    for label, values in rows(comparison):
        result.add_row(label, *values)
    return result


def markdown(comparison: Comparison) -> str:
    header = ["figure", *(figures.mode for figures in comparison.modes)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows(comparison):
        lines.append("| " + " | ".join([label.strip().replace("|", "\\|"), *values]) + " |")
    return "\n".join(lines)


def _pair(percentiles: dict[str, float]) -> str:
    return f"{percentiles.get('p50', 0):.0f} / {percentiles.get('p99', 0):.0f}"


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
