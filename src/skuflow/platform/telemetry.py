"""Tracing with OpenTelemetry: one tracer provider per service, its spans to wherever they are wanted.

Tracing is on when something takes the spans: an OTLP endpoint set by the standard variables
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; OTLP over HTTP), or a span processor
added in the process (`add_span_processor`: the tests' in-memory exporter, the dashboard). Otherwise no
provider is made and nothing is traced: a span nobody reads would cost every message and request its CPU.
`OTEL_SDK_DISABLED=true` turns it off whatever else is set; sampling (`OTEL_TRACES_SAMPLER`, default
parent-based always-on) and resource attributes (`OTEL_RESOURCE_ATTRIBUTES`) are read by the SDK itself.

Each service has its own provider, so that its spans carry its name (`service.name`) even when `skuflow up`
runs the three in one process. Spans follow the semantic conventions of version `SEMCONV_VERSION`, named in
each tracer's schema URL: the messaging layer writes its own (`skuflow.messaging.tracing`); HTTP server and
client spans and database spans come from the FastAPI, aiohttp and SQLAlchemy instrumentations, switched to
the stable HTTP and database conventions (`OTEL_SEMCONV_STABILITY_OPT_IN=http,database`, unless set otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from skuflow.messaging.tracing import SCHEMA_URL

NOT_TRACED = "/healthz,/readyz,/metrics"  # probes and scrapes: frequent, and of no flow

# The instrumentations read this once, at their first use: set before any of them runs.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")

_providers: dict[str, TracerProvider] = {}
_processors: list[SpanProcessor] = []


def add_span_processor(processor: SpanProcessor) -> None:
    """Send every service's spans to `processor` too, from now on (existing providers included)."""
    _processors.append(processor)
    for provider in _providers.values():
        provider.add_span_processor(processor)


def exporting() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return exporting() or bool(_processors)


def tracer_provider(service: str) -> TracerProvider | None:
    """The service's provider, made at the first ask; None while tracing is off."""
    if not enabled():
        return None
    provider = _providers.get(service)
    if provider is None:
        resource = Resource.create({"service.name": service, "service.namespace": "skuflow"})
        provider = TracerProvider(resource=resource)
        if exporting():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        for processor in _processors:
            provider.add_span_processor(processor)
        _providers[service] = provider
    return provider


def tracer(service: str, scope: str) -> Tracer | None:
    provider = tracer_provider(service)
    return provider.get_tracer(scope, schema_url=SCHEMA_URL) if provider is not None else None


def trace_http_server(app: FastAPI, service: str) -> None:
    """Server spans for every request but the probes' and scrapes'."""
    provider = tracer_provider(service)
    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, excluded_urls=NOT_TRACED, exclude_spans=["receive", "send"]
        )


def http_client_tracing(service: str) -> Iterable[aiohttp.TraceConfig]:
    """What an aiohttp session needs for client spans and the `traceparent` header on each call."""
    provider = tracer_provider(service)
    if provider is None:
        return ()
    return (create_trace_config(tracer_provider=provider, sem_conv_opt_in_mode=_StabilityMode.HTTP),)


def trace_database(engine: AsyncEngine, service: str) -> None:
    """A client span per statement (the SQLAlchemy instrumentation's, to the stable database conventions),
    for this engine only: `skuflow up` has an engine per service, each with its service's provider."""
    provider = tracer_provider(service)
    if provider is None:
        return
    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", schema_url=SCHEMA_URL)
    # The instrumentor instruments once per process; its engine tracer, made here, instruments one engine.
    usage = NoOpMeterProvider().get_meter("skuflow").create_up_down_counter("db.client.connection.count")
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


@contextmanager
def work_span(service: str, name: str, **attributes: Any) -> Iterator[Span | None]:
    """A span of the service's own work (an import, a reconciliation), current for the block; None while
    tracing is off. An exception leaving the block marks it failed."""
    traced = tracer(service, f"skuflow.{service}")
    if traced is None:
        yield None
        return
    with traced.start_as_current_span(name, attributes=attributes) as span:
        yield span


def reset() -> None:
    """Forget every provider and added processor: tracing is off again for what is built next (tests). The
    services already built keep theirs until they stop."""
    _providers.clear()
    _processors.clear()
