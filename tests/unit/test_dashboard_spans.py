"""The dashboard's span store: the same records whether spans come in process or over OTLP, a flow found by its
correlation id, and bounds that hold under any number of spans."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from skuflow.dashboard.spans import SpanRecord, SpanStore, StoreProcessor, records_from_otlp, timeline


def _flow_spans(correlation_id: str = "corr-1") -> tuple[list[ReadableSpan], SpanStore]:
    """A little flow: a server span, a publish in it, a failed process of it; kept by a store and an exporter."""
    store = SpanStore()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "inventory"}))
    provider.add_span_processor(StoreProcessor(store))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    ids = {"messaging.message.conversation_id": correlation_id, "db.query.text": "SELECT a long statement"}
    with tracer.start_as_current_span("POST /v1/stock", kind=SpanKind.SERVER, attributes={"http.route": "/v1/stock"}):
        with tracer.start_as_current_span("publish sku_processed", kind=SpanKind.PRODUCER, attributes=ids):
            pass
        with tracer.start_as_current_span("process x", kind=SpanKind.CONSUMER, attributes=ids) as span:
            span.set_status(Status(StatusCode.ERROR, "boom"))
    return list(exporter.get_finished_spans()), store


def test_spans_in_process_and_over_otlp_become_the_same_records():
    finished, store = _flow_spans()
    over_otlp = records_from_otlp(encode_spans(finished).SerializeToString())
    in_process = store.flow("corr-1")
    assert sorted(over_otlp, key=lambda r: r.span_id) == sorted(
        [r for r in store._traces[in_process[0].trace_id]], key=lambda r: r.span_id
    )
    process = next(r for r in over_otlp if r.kind == "consumer")
    assert (process.failed, process.message, process.service) == (True, "boom", "inventory")
    assert "db.query.text" not in process.attributes, "only what a timeline shows is kept"


def test_a_flow_is_found_by_its_correlation_id_and_drawn_from_its_first_start():
    _, store = _flow_spans("corr-7")
    drawn = timeline(store.flow("corr-7"))
    assert [span["name"] for span in drawn["spans"]] == ["POST /v1/stock", "publish sku_processed", "process x"]
    assert drawn["spans"][0]["offset_ms"] == 0
    assert drawn["failed"] is True
    assert drawn["services"] == ["inventory"]
    assert store.recent_flows() == ["corr-7"]
    assert store.flow("unknown") == []


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), max_size=400))
def test_the_store_keeps_at_most_its_bounds_whatever_comes(spans: list[tuple[int, int]]):
    store = SpanStore(max_traces=8, max_spans=5)
    for n, (trace, flow) in enumerate(spans):
        record = SpanRecord(
            format(trace, "032x"),
            format(n, "016x"),
            None,
            "s",
            "x",
            "internal",
            n,
            n,
            False,
            "",
            {"messaging.message.conversation_id": f"c{flow}"},
        )
        store.add([record])
    assert len(store._traces) <= 8
    assert all(len(kept) <= 5 for kept in store._traces.values())
    assert store.received == len(spans)
    kept = {trace for trace in store._traces}
    assert all(traces <= kept for traces in store._flows.values()), "no flow points at a forgotten trace"
    assert all(store._flows.values())


def test_a_body_that_is_not_otlp_is_a_value_error():
    with pytest.raises(ValueError, match="not an OTLP"):
        records_from_otlp(b"\xff\xff not protobuf")


def test_a_span_holds_bounded_text_and_one_without_proper_ids_is_not_kept():
    finished, _ = _flow_spans("corr-9")
    request = encode_spans(finished)
    first = request.resource_spans[0].scope_spans[0].spans[0]
    first.name = "n" * 100_000
    first.status.message = "m" * 100_000
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"short"
    records = records_from_otlp(request.SerializeToString())
    assert len(records) == len(finished) - 1
    named = next(r for r in records if r.span_id == first.span_id.hex())
    assert (len(named.name), len(named.message)) == (256, 1024)
