from pathlib import Path

import pytest

from skuflow.messaging import SKUFLOW, Exchange, Queue, Topology
from skuflow.messaging.topology_doc import BEGIN, END, REGENERATE, render_markdown, replace_section

PAGE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_architecture_page_shows_the_declared_topology():
    page = PAGE.read_text(encoding="utf-8")
    assert page == replace_section(page, render_markdown(SKUFLOW)), (
        f"docs/architecture.md disagrees with skuflow.messaging.topology.SKUFLOW: regenerate it with `{REGENERATE}`"
    )


def test_a_queue_is_a_row_naming_its_exchange_binding_and_dead_letters():
    events = Exchange("events", "fanout")
    orders = Exchange("orders", "direct")
    idle = Exchange("idle", "direct")
    topology = Topology(
        exchanges=(events, orders, idle),
        queues=(Queue("a.events", events), Queue("b.orders", orders), Queue("c.orders", orders, "b.orders")),
    )
    rendered = render_markdown(topology, retry_delays=(5, 1))
    assert rendered.splitlines()[2:6] == [
        "| `events` | fanout | `a.events` | (none: fanout) | `a.events.dlq` |",
        "| `orders` | direct | `b.orders` | `b.orders` | `b.orders.dlq` |",
        "| `orders` | direct | `c.orders` | `b.orders` | `c.orders.dlq` |",
        "| `idle` | direct | (none) | | |",
    ]
    assert "`Q.retry.1000ms`, `Q.retry.5000ms`" in rendered


def test_only_what_stands_between_the_markers_is_replaced():
    page = f"before\n{BEGIN}\nold table\n{END}\nafter\n"
    assert replace_section(page, "new table") == f"before\n{BEGIN}\nnew table\n{END}\nafter\n"
    with pytest.raises(ValueError, match="lacks the markers"):
        replace_section("no markers here", "new table")
