import io
import json
import logging

from skuflow.messaging import flow_scope
from skuflow.platform.logging import JsonFormatter, TextFormatter, formatter_for


def test_a_log_line_is_one_json_object_carrying_the_flow():
    record = logging.LogRecord("skuflow.test", logging.WARNING, __file__, 1, "stock for %s", ("SKU-1",), None)
    with flow_scope("corr-9", causation_id="req-3"):
        line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "stock for SKU-1"
    assert (entry["level"], entry["logger"]) == ("warning", "skuflow.test")
    assert (entry["correlation_id"], entry["causation_id"]) == ("corr-9", "req-3")


def test_outside_a_flow_there_are_no_ids():
    record = logging.LogRecord("skuflow.test", logging.INFO, __file__, 1, "idle", (), None)
    assert "correlation_id" not in json.loads(JsonFormatter().format(record))


def test_a_traced_line_carries_its_trace_and_span_ids():
    from opentelemetry.sdk.trace import TracerProvider

    record = logging.LogRecord("skuflow.test", logging.INFO, __file__, 1, "traced", (), None)
    with TracerProvider().get_tracer("test").start_as_current_span("work") as span:
        entry = json.loads(JsonFormatter().format(record))
        text = TextFormatter(colour=False).format(record)
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert f"trace {entry['trace_id'][:8]}" in text


def test_a_text_line_is_one_readable_line_with_the_flow_short():
    record = logging.LogRecord("skuflow.inventory", logging.WARNING, __file__, 1, "two\nlines for %s", ("SKU-1",), None)
    with flow_scope("3f2a9c1e0b5d4c7a8e6f1a2b3c4d5e6f"):
        line = TextFormatter(colour=False).format(record)
    assert "\n" not in line
    assert "WARNING skuflow.inventory: two\\nlines for SKU-1" in line
    assert line.endswith("[flow 3f2a9c1e]")
    coloured = TextFormatter(colour=True).format(record)
    assert "\x1b[33m" in coloured  # a warning in yellow


def test_auto_is_text_on_a_terminal_and_json_elsewhere(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(formatter_for("auto", Terminal()), TextFormatter)
    assert isinstance(formatter_for("auto", io.StringIO()), JsonFormatter)
    assert isinstance(formatter_for("text", io.StringIO()), TextFormatter)
    assert isinstance(formatter_for("json", Terminal()), JsonFormatter)
