import json
import logging

from skuflow.messaging import flow_scope
from skuflow.platform.logging import JsonFormatter


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
