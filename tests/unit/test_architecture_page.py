from pathlib import Path

import pytest

from skuflow.messaging import Exchange, MessageType, Queue, Route
from skuflow.messaging.routes_doc import BEGIN, END, REGENERATE, render_markdown, replace_section

PAGE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_architecture_page_shows_the_route_table():
    page = PAGE.read_text(encoding="utf-8")
    assert page == replace_section(page, render_markdown()), (
        f"docs/architecture.md disagrees with skuflow.messaging.routes: regenerate it with `{REGENERATE}`"
    )


def test_a_queue_is_a_row_naming_its_exchange_binding_message_producers_consumer_and_dead_letters():
    events = Exchange("events", "fanout")
    orders = Exchange("orders", "direct")
    happened = MessageType("happened", events, ("a",), {"properties": {"id": {"type": "string"}}}, "it happened")
    order = MessageType(
        "order",
        orders,
        ("a", "b"),
        {"properties": {"n": {"type": "integer"}, "why": {"type": ["string", "null"]}}, "required": ["n"]},
        "do it",
    )
    routes = [
        Route(Queue("a.events", events), happened, "a"),
        Route(Queue("b.orders", orders), order, "b"),
        Route(Queue("c.orders", orders, "b.orders"), order, "c"),
    ]
    rendered = render_markdown(routes, [happened, order], retry_delays=(5, 1))
    assert rendered.splitlines()[2:5] == [
        "| `a.events` | `events` (fanout) | (none: fanout) | `happened` | a | a | `a.events.dlq` |",
        "| `b.orders` | `orders` (direct) | `b.orders` | `order` | a, b | b | `b.orders.dlq` |",
        "| `c.orders` | `orders` (direct) | `b.orders` | `order` | a, b | c | `c.orders.dlq` |",
    ]
    assert "| `happened` | `id` (optional): string | it happened |" in rendered
    assert "| `order` | `n`: integer, `why` (optional): string or null | do it |" in rendered
    assert "`Q.retry.1000ms`, `Q.retry.5000ms`" in rendered


def test_a_route_whose_queue_is_not_on_its_message_types_exchange_is_refused():
    happened = MessageType("happened", Exchange("events", "fanout"), ("a",), {}, "")
    with pytest.raises(ValueError, match="bound to orders"):
        Route(Queue("a.orders", Exchange("orders", "direct")), happened, "a")


def test_only_what_stands_between_the_markers_is_replaced():
    page = f"before\n{BEGIN}\nold table\n{END}\nafter\n"
    assert replace_section(page, "new table") == f"before\n{BEGIN}\nnew table\n{END}\nafter\n"
    with pytest.raises(ValueError, match="lacks the markers"):
        replace_section("no markers here", "new table")
