"""One stock report, one trace: from inventory's HTTP span through the broker (and the outbox) to catalog, users
and the email, in both coordination styles and on both stacks, with the messaging spans named and attributed
as the semantic conventions (version 1.44.0) say. Spans are read from an in-memory exporter fed by every
service of the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from skuflow.dashboard.spans import SpanStore, StoreProcessor, timeline
from skuflow.messaging.tracing import SCHEMA_URL
from skuflow.platform import telemetry
from tests.services.conftest import MODES, System
from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("mode", MODES)


async def test_one_report_is_one_trace_across_every_service_the_broker_and_the_email(
    spans: InMemorySpanExporter, system: System, mode: str
):
    """`spans` before `system`: the services are built tracing."""
    admin = await system.admin_token()
    status, _, _ = await system.call(
        "PUT", "/v1/products/SKU-T", token=admin, service="catalog", json={"name": "Lamp", "price": "9.90"}
    )
    assert status == 200
    ada, token = await system.sign_up("ada@example.com")
    status, _, _ = await system.call("PUT", f"/v1/users/{ada}/wishlist/SKU-T", token=token, service="users")
    assert status == 201
    warehouse = await system.client_token()

    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-T", "on_hand": 3}]}
    status, _, _ = await system.call("POST", "/v1/stock", token=warehouse, json=body)
    assert status == 202
    await wait_until(lambda: system.smtp.mails, what="the email")
    await wait_until(lambda: system.catalog_knows("SKU-T", 1), what="catalog to learn revision 1")

    def trace_done() -> bool:
        return any(s.name == "send email" and s.status.is_ok for s in _of_report(spans.get_finished_spans()))

    await wait_until(trace_done, what="the email's span, in the report's trace")
    trace = _of_report(spans.get_finished_spans())
    services = {_service(s) for s in trace}
    assert services == {"inventory", "catalog", "users"}, services

    producers = [s for s in trace if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in trace if s.kind is SpanKind.CONSUMER]
    assert producers
    assert {_service(s) for s in consumers} >= {"catalog", "users"}
    for span in (*producers, *consumers):
        _conforms(span)
    by_id = {s.context.span_id: s for s in trace}
    for consumer in consumers:  # each continues the publish of its message
        parent = by_id[consumer.parent.span_id]
        assert parent.kind is SpanKind.PRODUCER
        assert parent.attributes["messaging.message.id"] == consumer.attributes["messaging.message.id"]
    statements = [s for s in trace if "db.system.name" in s.attributes]
    assert {_service(s) for s in statements} == {"inventory", "catalog", "users"}, "each service's statements"
    assert {s.attributes["db.system.name"] for s in statements} == {
        "embedded": {"sqlite"},
        "production": {"postgresql"},
    }[system.stack.name]
    [email] = [s for s in trace if s.name == "send email"]
    assert _service(email) == "users"
    assert email.parent is not None
    assert by_id[email.parent.span_id].kind is SpanKind.CONSUMER  # the change that made it due

    if mode == "choreography":
        [event] = [s for s in producers if s.attributes["messaging.destination.name"] == "sku_processed"]
        assert event.name == "publish sku_processed"  # a fanout exchange: no routing key
        assert by_id[event.parent.span_id].attributes.get("http.route") == "/v1/stock"  # across the outbox
        assert {s.attributes["messaging.destination.name"] for s in consumers} >= {
            "sku_processed:catalog.sku_processed",
            "sku_processed:users.sku_processed",
        }
        asks = [s for s in trace if s.kind is SpanKind.SERVER and _service(s) == "inventory" and s is not _root(trace)]
        assert asks, "catalog and users asked inventory over REST, in the same trace"
    else:
        commands = {s.attributes["messaging.destination.name"] for s in producers}
        assert {
            "commands:catalog.update_sku_availability",
            "commands:users.update_wishlists_for_sku",
        } <= commands
        replies = [s for s in consumers if s.attributes["messaging.destination.name"].endswith("flow_replies")]
        assert replies, "the replies' processing is in the report's trace"


def _of_report(finished: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    """The spans of the trace whose root is the `POST /v1/stock` server span."""
    roots = [s for s in finished if s.kind is SpanKind.SERVER and s.attributes.get("http.route") == "/v1/stock"]
    if not roots:
        return []
    trace_id = roots[-1].context.trace_id
    return [s for s in finished if s.context.trace_id == trace_id]


def _root(trace: list[ReadableSpan]) -> ReadableSpan:
    [root] = [s for s in trace if s.parent is None]
    return root


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def _conforms(span: ReadableSpan) -> None:
    attributes: dict[str, Any] = dict(span.attributes or {})
    operation = "send" if span.kind is SpanKind.PRODUCER else "process"
    assert attributes["messaging.operation.type"] == operation
    assert span.name == f"{attributes['messaging.operation.name']} {attributes['messaging.destination.name']}"
    assert attributes["messaging.system"] in ("rabbitmq", "memory")
    assert attributes["messaging.message.id"]
    assert attributes["messaging.message.conversation_id"]
    assert span.instrumentation_scope.schema_url == SCHEMA_URL
    if operation == "process":
        assert attributes["skuflow.messaging.attempt"] >= 1
        assert attributes["skuflow.messaging.outcome"] == "acked"


@pytest.fixture
def store() -> Iterator[SpanStore]:
    """The dashboard's store, fed by every service built after it (ask for it before `system`)."""
    kept = SpanStore()
    telemetry.add_span_processor(StoreProcessor(kept))
    try:
        yield kept
    finally:
        telemetry.reset()


async def test_the_dashboards_store_draws_a_reports_flow_across_the_services(store: SpanStore, system: System):
    warehouse = await system.client_token()
    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-D", "on_hand": 4}]}
    status, _, _ = await system.call(
        "POST", "/v1/stock", token=warehouse, json=body, headers={"X-Correlation-ID": "dash-1"}
    )
    assert status == 202
    await wait_until(lambda: system.catalog_knows("SKU-D", 1), what="catalog to learn revision 1")

    def drawn() -> bool:
        return set(timeline(store.flow("dash-1"))["services"]) >= {"inventory", "catalog", "users"}

    await wait_until(drawn, what="the flow's spans from every service")
    flow = timeline(store.flow("dash-1"))
    assert flow["spans"][0]["kind"] == "server"  # the report comes first
    offsets = [span["offset_ms"] for span in flow["spans"]]
    assert offsets == sorted(offsets)
    assert "dash-1" in store.recent_flows()
