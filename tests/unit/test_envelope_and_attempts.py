import pydantic

from skuflow.messaging import Envelope, flow_scope
from skuflow.messaging.consumer import retries_so_far


class Body(pydantic.BaseModel):
    sku: str


def test_a_new_envelope_takes_its_ids_from_the_current_flow():
    with flow_scope("corr-1", causation_id="msg-0"):
        envelope = Envelope.new("sku_processed", Body(sku="SKU-1"), app_id="inventory")
    assert (envelope.correlation_id, envelope.causation_id) == ("corr-1", "msg-0")
    assert envelope.body == b'{"sku":"SKU-1"}'
    assert envelope.json() == {"sku": "SKU-1"}


def test_outside_any_flow_a_new_correlation_id_is_made_and_there_is_no_cause():
    first = Envelope.new("sku_processed", {"sku": "A"}, app_id="inventory")
    second = Envelope.new("sku_processed", {"sku": "A"}, app_id="inventory")
    assert first.causation_id is None
    assert first.correlation_id != second.correlation_id
    assert first.message_id != second.message_id


def test_explicit_ids_win_over_the_flow():
    with flow_scope("corr-1", causation_id="msg-0"):
        envelope = Envelope.new("x", {}, app_id="a", correlation_id="mine", causation_id="req-9")
    assert (envelope.correlation_id, envelope.causation_id) == ("mine", "req-9")


def test_retries_are_counted_from_the_wait_queues_in_x_death_only():
    headers = {
        "x-death": [
            {"queue": "catalog.sku_processed.retry.5000ms", "reason": "expired", "count": 1},
            {"queue": "catalog.sku_processed.retry.1000ms", "reason": "expired", "count": 2},
            {"queue": "catalog.sku_processed", "reason": "rejected", "count": 4},
            {"queue": "users.sku_processed.retry.1000ms", "reason": "expired", "count": 7},
        ]
    }
    assert retries_so_far(headers, "catalog.sku_processed") == 3
    assert retries_so_far({}, "catalog.sku_processed") == 0


def test_our_own_retry_count_holds_when_the_broker_restarts_x_death_at_each_trip():
    # RabbitMQ 3.13+ ignores a republished x-death: after three trips it shows only the last one.
    headers = {
        "skuflow-retries": 3,
        "x-death": [{"queue": "catalog.sku_processed.retry.5000ms", "reason": "expired", "count": 1}],
    }
    assert retries_so_far(headers, "catalog.sku_processed") == 3
