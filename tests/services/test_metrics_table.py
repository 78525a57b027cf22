"""The metrics table of docs/observability.md against running services: every metric it lists is on a service's
/metrics, nothing else is, and each moves when its event happens, scraped before and after.

One system (choreography) on each stack, with a warehouse FTP feed and readings refreshed every 0.1 s; the
events are driven through the running services: HTTP requests, a stock report that makes an email due (refused
once by the SMTP server, then sent), a message the catalog dead-letters, one it retries, an outbox message the
broker refuses, warehouse files imported and rejected, and a consumer stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pydantic
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from skuflow.embedded.ftp import FtpServer
from skuflow.messaging import Envelope, Message, Queue, Subscription, Topology
from skuflow.messaging.routes import SKU_EVENTS
from skuflow.platform.runtime import ServiceRuntime
from skuflow.users.db import notifications
from skuflow.warehouse import upload
from tests.conftest import Stack
from tests.services.conftest import System
from tests.support.messages import publish_raw, raw_envelope
from tests.support.metrics_table import documented_metrics
from tests.support.waiting import wait_until

SERVICES = ("inventory", "catalog", "users")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Moved by events too slow or too disruptive to drive here, each in the test that drives it.
DRIVEN_ELSEWHERE = {
    "skuflow_backlog_outbox_messages": "tests/services/test_backpressure.py",
    "skuflow_backlog_running_flows": "tests/services/test_backpressure.py",
    "skuflow_backpressure_refused_total": "tests/services/test_backpressure.py",
    "skuflow_flow_steps_held": "tests/services/test_orchestration.py",
    "skuflow_flow_steps_resent_total": "tests/services/test_orchestration.py",
    "skuflow_argon2_refused_total": "tests/services/test_users_overload.py",
    "skuflow_flow_steps_failed_total": "tests/services/test_orchestration.py",
}


# Exposed in orchestration only: the test runs in choreography.
ORCHESTRATION_ONLY = {"skuflow_backlog_running_flows"}


class Ping(pydantic.BaseModel):
    n: int


@pytest.fixture
async def ftp(stack: Stack, tmp_path: Path) -> AsyncIterator[FtpServer]:
    """A warehouse FTP server inventory watches; the readings of /metrics every 0.1 s (before `system` starts)."""
    server = FtpServer(tmp_path / "ftp", "warehouse", "secret-ftp")
    server.start()
    stack.overrides |= {
        "metrics_refresh_seconds": 0.1,
        "warehouse_ftp_url": server.url(),
        "warehouse_ftp_poll_seconds": 0.1,
    }
    yield server
    server.stop()


class Scraper:
    def __init__(self, system: System) -> None:
        self.system = system

    async def samples(self, service: str) -> Samples:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in await self.families(service)
            for sample in family.samples
        }

    async def families(self, service: str) -> list:
        async with self.system.http.get(f"{getattr(self.system, service).url}/metrics") as response:
            assert response.status == 200
            return list(text_string_to_metric_families(await response.text()))

    async def value(self, service: str, name: str, **labels: str) -> float:
        return _value(await self.samples(service), name, **labels)

    async def moves(
        self,
        service: str,
        name: str,
        event: Callable[[], Awaitable[object]] | None = None,
        *,
        by: Callable[[float, float], bool] = lambda before, after: after > before,
        since: dict[str, Samples] | None = None,
        **labels: str,
    ) -> None:
        """`name` (with `labels`) on `service`'s /metrics moves as `by` says once `event` happened (from its
        value now, or in `since`, scraped earlier)."""
        if since is None:
            before = await self.value(service, name, **labels)
        else:
            before = _value(since[service], name, **labels)
        if event is not None:
            await event()

        async def moved() -> bool:
            return by(before, await self.value(service, name, **labels))

        await wait_until(moved, what=f"{name}{labels or ''} on {service} to move from {before}")


def _value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


def runtime_of(system: System, service: str) -> ServiceRuntime:
    runtime: ServiceRuntime = getattr(system, service).app.state.runtime
    return runtime


async def test_each_metric_of_the_table_is_exposed_and_moves_when_its_event_happens(
    ftp: FtpServer, system: System, tmp_path: Path
):
    metrics = Scraper(system)
    moved: set[str] = set()
    start = {service: await metrics.samples(service) for service in SERVICES}

    async def moves(service: str, name: str, event: Callable[[], Awaitable[object]] | None = None, **kw) -> None:
        await metrics.moves(service, name, event, **kw)
        moved.add(name.removesuffix("_count"))  # a histogram's count: the histogram

    # A user wishes for an item; the warehouse reports it in stock; the SMTP server refuses the first email.
    system.smtp.refuse_next = 1
    user_id, user_token = await system.sign_up("ada@example.com")
    status, _, _ = await system.call("PUT", f"/v1/users/{user_id}/wishlist/SKU-M", token=user_token, service="users")
    assert status == 201
    warehouse = await system.client_token()

    async def report() -> None:
        body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-M", "on_hand": 2}]}
        status, answer, _ = await system.call("POST", "/v1/stock", token=warehouse, json=body)
        assert status == 202, answer

    async def ask_availability() -> None:
        status, _, _ = await system.call("GET", "/v1/skus/SKU-M/availability")
        assert status in (200, 404)

    route = "/v1/skus/{sku}/availability"  # the template, never the path asked
    await moves("inventory", "skuflow_token_cache_misses_total", report)  # the token's first use: users asked
    await moves("inventory", "skuflow_token_cache_hits_total", report)  # its second: cached
    for name in ("skuflow_http_requests_total", "skuflow_http_request_duration_seconds_count"):
        await moves("inventory", name, ask_availability, route=route, status="200")
    assert await metrics.value("inventory", "skuflow_http_requests_total", route="/v1/skus/SKU-M/availability") == 0

    # The report's event: inventory's outbox relays it, catalog and users take it, catalog asks inventory.
    await moves("inventory", "skuflow_outbox_relayed_total", since=start)
    await moves(
        "inventory", "skuflow_published_messages_total", since=start, exchange="sku_processed", type="sku_processed"
    )
    await moves("inventory", "skuflow_messages_total", since=start, outcome="published")
    await moves("catalog", "skuflow_queue_messages_total", since=start, queue="catalog.sku_processed", outcome="acked")
    await moves("catalog", "skuflow_http_client_requests_total", since=start, target="inventory")
    await moves(
        "catalog",
        "skuflow_message_handling_duration_seconds_count",
        since=start,
        queue="catalog.sku_processed",
        outcome="acked",
    )

    # The email: refused once (transient), pending meanwhile, then due at once and sent.
    await moves("users", "skuflow_email_failures_total", since=start, kind="transient")
    await moves("users", "skuflow_emails_pending", by=lambda _, after: after >= 1)

    async def due_now() -> None:
        async with runtime_of(system, "users").db.transaction() as session:
            pending = notifications.c.status == "pending"
            await session.execute(update(notifications).where(pending).values(next_attempt_at=datetime.now(UTC)))

    await moves("users", "skuflow_emails_sent_total", due_now)
    await moves("users", "skuflow_emails_pending", by=lambda _, after: after == 0)

    # A message catalog can never handle (not its queue's type): dead-lettered, and its DLQ grows.
    dlq = "catalog.sku_processed.dlq"

    async def unhandleable() -> None:
        await publish_raw(system.observer, "catalog.sku_processed", raw_envelope("not_ours", b"{}"))

    before = {service: await metrics.samples(service) for service in SERVICES}
    await moves("catalog", "skuflow_queue_ready_messages", unhandleable, queue=dlq)
    await moves(
        "catalog", "skuflow_queue_messages_total", since=before, queue="catalog.sku_processed", outcome="dead_lettered"
    )
    await moves("catalog", "skuflow_messages_total", since=before, outcome="dead_lettered")

    # A message that fails once, on a queue of the test's own that catalog's broker consumes: retried, then acked.
    catalog_broker = runtime_of(system, "catalog").broker
    await catalog_broker.declare(Topology((SKU_EVENTS,), (Queue("test.metrics.flaky", SKU_EVENTS),)))
    attempts: list[int] = []

    async def flaky(message: Message[Ping]) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("the first attempt fails")

    await catalog_broker.consume(Subscription("test.metrics.flaky", "ping", Ping, flaky))

    async def ping() -> None:
        envelope = Envelope.new("ping", {"n": 1}, app_id="test")
        await publish_raw(system.observer, "test.metrics.flaky", envelope)

    before = {service: await metrics.samples(service) for service in SERVICES}
    await moves("catalog", "skuflow_queue_messages_total", ping, queue="test.metrics.flaky", outcome="retried")
    await moves("catalog", "skuflow_queue_messages_total", since=before, queue="test.metrics.flaky", outcome="acked")
    await moves("catalog", "skuflow_messages_total", since=before, outcome="retried")
    assert attempts == [1, 2]

    # An outbox message the broker refuses (no such exchange): it waits, and the outbox lags.
    outbox = runtime_of(system, "catalog").outbox
    assert outbox is not None

    async def refused() -> None:
        async with outbox.db.transaction() as session:
            await outbox.add(session, Envelope.new("ping", {"n": 2}, app_id="catalog"), "test.no_such_exchange")

    before = {service: await metrics.samples(service) for service in SERVICES}
    await moves("catalog", "skuflow_outbox_refusals_total", refused)
    await moves("catalog", "skuflow_outbox_backlog_messages", by=lambda _, after: after == 1)
    await moves("catalog", "skuflow_outbox_lag_seconds", by=lambda _, after: after > 0)
    lag = await metrics.value("catalog", "skuflow_outbox_lag_seconds")
    await moves("catalog", "skuflow_outbox_lag_seconds", by=lambda _, after: after > lag)  # it ages

    # Warehouse files over FTP: one imported (its lines counted), one rejected.
    async def put(name: str, content: str) -> None:
        local = tmp_path / name
        local.write_text(content)
        await upload(ftp.location(), local)

    good = "warehouse_id,sku,on_hand\nWH-2,SKU-F1,1\nWH-2,SKU-F2,2\n"
    await moves("inventory", "skuflow_warehouse_lines_total", lambda: put("good.csv", good), by=lambda b, a: a == b + 2)
    await moves("inventory", "skuflow_warehouse_files_total", since=start, status="imported")
    bad = "warehouse_id,sku,on_hand\nWH-2,SKU-F3,minus one\n"
    await moves("inventory", "skuflow_warehouse_files_total", lambda: put("bad.csv", bad), status="rejected")

    # Consumers as the broker counts them: one on each of catalog's queues; none once it is stopped.
    queue = "catalog.update_sku_availability"  # orchestration's: nothing arrives on it in choreography
    assert await metrics.value("catalog", "skuflow_queue_consumers", queue=queue) >= 1
    [consumer] = [one for one in catalog_broker.consumers if one.queue == queue]
    await moves("catalog", "skuflow_queue_consumers", consumer.stop, queue=queue, by=lambda _, after: after == 0)

    # Every metric of the table is on some service's /metrics, and nothing else is.
    table = documented_metrics()
    exposed: dict[str, set[str]] = {}
    for service in SERVICES:
        for family in await metrics.families(service):
            exposed.setdefault(family.name, set()).update(label for sample in family.samples for label in sample.labels)
    documented = {metric.family for name, metric in table.items() if name not in ORCHESTRATION_ONLY}
    assert documented == set(exposed), (sorted(documented - set(exposed)), sorted(set(exposed) - documented))
    for metric in (
        metric for name, metric in table.items() if name not in ORCHESTRATION_ONLY
    ):  # the labels documented are those exposed (where a sample shows them)
        seen = exposed[metric.family] - {"le"}
        assert not seen or seen == {"service", *metric.labels}, (metric.name, seen)

    # And each moved here, or in the test named for it.
    assert moved | DRIVEN_ELSEWHERE.keys() == set(table), sorted(set(table) - moved - DRIVEN_ELSEWHERE.keys())
    assert not moved & DRIVEN_ELSEWHERE.keys()


def test_no_metric_is_forgotten_by_the_test_above():
    """The table's rows that the test above does not drive name the test that does (or say none does)."""
    assert DRIVEN_ELSEWHERE.keys() <= documented_metrics().keys()
    root = Path(__file__).parents[2]
    for name, where in DRIVEN_ELSEWHERE.items():
        if where:
            text = (root / where).read_text()
            assert name in text or name.rsplit("_", 2)[0] in text, (name, where)
