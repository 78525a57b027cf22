"""The dashboard's memory of recent traces, from which it draws each flow's timeline (issue 19).

Spans arrive two ways: in process, from every service of `skuflow up` (`StoreProcessor`, a span processor
added with `telemetry.add_span_processor`), or over OTLP/HTTP from services in processes of their own
(`records_from_otlp`, the body of a `POST /v1/traces`). Both become `SpanRecord`s in one `SpanStore`.

The store is bounded, whatever the load: at most `max_traces` traces (the least recently touched go first)
and `max_spans` spans in each (a trace that grows past it keeps its first spans and counts the rest), so a
burst of a thousand changes a second neither grows memory nor slows the services that feed it. A flow is
found by its correlation id, which its messaging spans carry (`messaging.message.conversation_id`); one flow
may span several traces (a batch's span is a root of its own), and its timeline gathers them all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

CONVERSATION = "messaging.message.conversation_id"
# The attributes a timeline shows; the others are not kept (a span's SQL text, say, can be long).
SHOWN = (
    CONVERSATION,
    "messaging.destination.name",
    "messaging.operation.type",
    "messaging.message.id",
    "skuflow.messaging.attempt",
    "skuflow.messaging.outcome",
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "db.system.name",
    "db.operation.name",
    "error.type",
    "skuflow.feed.path",
    "skuflow.feed.outcome",
    "skuflow.email.sku",
)
_KINDS = {kind.value: kind.name.lower() for kind in SpanKind}
# What one span may hold, whoever sent it: the bounds on traces and spans then bound the memory too.
MAX_NAME = 256
MAX_TEXT = 1024


def _short(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _kept(value: Any) -> Any:
    return _short(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class SpanRecord:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    service: str
    name: str
    kind: str  # internal, server, client, producer, consumer
    start_ns: int
    end_ns: int
    failed: bool
    message: str  # the status's description, when it failed
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def correlation_id(self) -> str | None:
        value = self.attributes.get(CONVERSATION)
        return str(value) if value else None


class SpanStore:
    def __init__(self, max_traces: int = 2_000, max_spans: int = 500) -> None:
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.received = 0
        self.dropped = 0  # spans past a trace's bound
        self._traces: OrderedDict[str, list[SpanRecord]] = OrderedDict()
        self._flows: OrderedDict[str, set[str]] = OrderedDict()  # correlation id -> trace ids
        self._lock = threading.Lock()  # spans end on the event loop and, over OTLP, on the server's

    def add(self, records: Iterable[SpanRecord]) -> None:
        with self._lock:
            for record in records:
                self.received += 1
                spans = self._traces.get(record.trace_id)
                if spans is None:
                    spans = self._traces[record.trace_id] = []
                    while len(self._traces) > self.max_traces:
                        self._forget(*self._traces.popitem(last=False))
                self._traces.move_to_end(record.trace_id)
                if len(spans) >= self.max_spans:
                    self.dropped += 1
                    continue
                spans.append(record)
                if (flow := record.correlation_id) is not None:
                    self._flows.setdefault(flow, set()).add(record.trace_id)
                    self._flows.move_to_end(flow)

    def flow(self, correlation_id: str) -> list[SpanRecord]:
        """Every kept span of the flow's traces, in the order they started."""
        with self._lock:
            traces = self._flows.get(correlation_id, set())
            spans = [span for trace_id in traces for span in self._traces.get(trace_id, ())]
        return sorted(spans, key=lambda span: (span.start_ns, span.end_ns))

    def recent_flows(self, limit: int = 20) -> list[str]:
        """The correlation ids of the flows most recently heard of, newest first."""
        with self._lock:
            return list(reversed(self._flows))[:limit]

    def _forget(self, trace_id: str, spans: Sequence[SpanRecord]) -> None:
        for flow in {span.correlation_id for span in spans} - {None}:
            assert flow is not None
            traces = self._flows.get(flow)
            if traces is not None:
                traces.discard(trace_id)
                if not traces:
                    del self._flows[flow]


def timeline(spans: Sequence[SpanRecord]) -> dict[str, Any]:
    """A flow's spans as the page draws them: each one's offset and duration from the first start (ms)."""
    if not spans:
        return {"spans": [], "duration_ms": 0.0}
    origin = spans[0].start_ns
    end = max(span.end_ns for span in spans)
    return {
        "duration_ms": (end - origin) / 1e6,
        "services": sorted({span.service for span in spans}),
        "failed": any(span.failed for span in spans),
        "spans": [
            {
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "parent_id": span.parent_id,
                "service": span.service,
                "name": span.name,
                "kind": span.kind,
                "offset_ms": (span.start_ns - origin) / 1e6,
                "duration_ms": (span.end_ns - span.start_ns) / 1e6,
                "failed": span.failed,
                "message": span.message,
                "attributes": dict(span.attributes),
            }
            for span in spans
        ],
    }


class StoreProcessor(SpanProcessor):
    """Every span a service of this process ends, into `store` (kept only for what a timeline shows)."""

    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing until it ends."""

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        attributes = span.attributes or {}
        self.store.add(
            [
                SpanRecord(
                    trace_id=format(context.trace_id, "032x"),
                    span_id=format(context.span_id, "016x"),
                    parent_id=format(span.parent.span_id, "016x") if span.parent is not None else None,
                    service=_short(str(span.resource.attributes.get("service.name", "unknown")), MAX_NAME),
                    name=_short(span.name, MAX_NAME),
                    kind=span.kind.name.lower(),
                    start_ns=span.start_time or 0,
                    end_ns=span.end_time or span.start_time or 0,
                    failed=span.status.status_code is StatusCode.ERROR,
                    message=_short(span.status.description or ""),
                    attributes={key: _kept(attributes[key]) for key in SHOWN if key in attributes},
                )
            ]
        )

    def shutdown(self) -> None:
        """Nothing held."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def records_from_otlp(body: bytes) -> list[SpanRecord]:
    """The spans of an OTLP/HTTP export request (protobuf); ValueError when the body is not one."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as error:  # protobuf raises its own DecodeError
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {error}") from None
    records = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        service = _short(str(resource.get("service.name") or "unknown"), MAX_NAME)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8 or len(span.parent_span_id) not in (0, 8):
                    continue  # not an OpenTelemetry span's ids: nothing to draw it by
                attributes = {item.key: _kept(_value(item.value)) for item in span.attributes if item.key in SHOWN}
                records.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        service=service,
                        name=_short(span.name, MAX_NAME),
                        kind=_KINDS.get(span.kind - 1, "internal"),  # OTLP counts from UNSPECIFIED = 0
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano or span.start_time_unix_nano,
                        failed=span.status.code == 2,  # STATUS_CODE_ERROR
                        message=_short(span.status.message),
                        attributes=attributes,
                    )
                )
    return records


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else None
