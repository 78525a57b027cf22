import pytest

from skuflow.messaging import SKUFLOW, Exchange, Queue, Topology, dead_letter_queue, wait_queue
from skuflow.messaging.broker import all_queue_names


def test_the_system_topology_is_the_contracts():
    assert {(e.name, e.kind) for e in SKUFLOW.exchanges} == {("sku_processed", "fanout"), ("commands", "direct")}
    assert [q.name for q in SKUFLOW.bound_to("sku_processed", "")] == [
        "inventory.sku_processed",
        "catalog.sku_processed",
        "users.sku_processed",
    ]
    for command_queue in (
        "inventory.recalculate_sku",
        "catalog.update_sku_availability",
        "users.update_wishlists_for_sku",
        "inventory.flow_replies",
    ):
        assert [q.name for q in SKUFLOW.bound_to("commands", command_queue)] == [command_queue]


def test_a_direct_exchange_routes_only_by_the_queue_name():
    assert SKUFLOW.bound_to("commands", "nobody") == []


def test_every_queue_gets_a_dlq_and_one_wait_queue_per_delay_named_after_it():
    names = all_queue_names(SKUFLOW, (1, 5, 0.25))
    assert "catalog.sku_processed.dlq" in names
    assert "catalog.sku_processed.retry.250ms" in names
    assert "catalog.sku_processed.retry.5000ms" in names
    assert len(names) == len(SKUFLOW.queues) * 5
    assert dead_letter_queue("q") == "q.dlq"
    assert wait_queue("q", 30) == "q.retry.30000ms"


def test_a_queue_bound_to_an_undeclared_exchange_is_refused():
    orphan = Queue("orphan", Exchange("nowhere", "fanout"))
    with pytest.raises(ValueError, match="undeclared exchange 'nowhere'"):
        Topology(exchanges=(), queues=(orphan,))
