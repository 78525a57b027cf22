"""The route table as Markdown, for `docs/architecture.md` (a unit test keeps the page in step).

python -m skuflow.messaging.routes_doc                          # print the tables
python -m skuflow.messaging.routes_doc docs/architecture.md     # rewrite the page between its markers
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from skuflow.messaging.broker import DEFAULT_RETRY_DELAYS
from skuflow.messaging.routes import MESSAGE_TYPES, ROUTES, MessageType, Route
from skuflow.messaging.topology import dead_letter_queue, wait_queue

BEGIN = "<!-- routes:begin (generated from skuflow.messaging.routes: do not edit by hand) -->"
END = "<!-- routes:end -->"
REGENERATE = "python -m skuflow.messaging.routes_doc docs/architecture.md"


def render_markdown(
    routes: Iterable[Route] = ROUTES,
    message_types: Iterable[MessageType] = MESSAGE_TYPES,
    retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
) -> str:
    """One row per queue, in the table's order; one per message type with its body's fields; and the wait
    queues of `retry_delays` (by default the default of `SKUFLOW_RETRY_DELAYS`)."""
    rows = [
        "| queue | exchange | binding key | message type | produced by | consumed by | dead letters |",
        "|---|---|---|---|---|---|---|",
    ]
    for route in routes:
        queue, exchange = route.queue, route.queue.exchange
        key = "(none: fanout)" if exchange.kind == "fanout" else f"`{queue.routing_key}`"
        rows.append(
            f"| `{queue.name}` | `{exchange.name}` ({exchange.kind}) | {key} | `{route.message.name}` "
            f"| {', '.join(route.message.producers)} | {route.consumer} | `{dead_letter_queue(queue.name)}` |"
        )
    rows += ["", "| message type | body | what it says |", "|---|---|---|"]
    for message in message_types:
        rows.append(f"| `{message.name}` | {_fields(message.schema)} | {message.summary} |")
    waits = ", ".join(f"`{name}`" for name in dict.fromkeys(wait_queue("Q", delay) for delay in sorted(retry_delays)))
    return "\n".join(
        [
            *rows,
            "",
            f"Each work queue `Q` also has one wait queue per retry delay: {waits} "
            "(for the default `SKUFLOW_RETRY_DELAYS`), whose expired messages fall back into `Q`.",
        ]
    )


def _fields(schema: Mapping[str, Any]) -> str:
    required = set(schema.get("required", ()))
    return ", ".join(
        f"`{name}`{'' if name in required else ' (optional)'}: {_kind(field)}"
        for name, field in schema.get("properties", {}).items()
    )


def _kind(field: Mapping[str, Any]) -> str:
    if "enum" in field:
        return " \\| ".join(f'`"{value}"`' for value in field["enum"])
    kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
    return " or ".join(kinds)


def replace_section(page: str, rendered: str) -> str:
    """`page` with what stands between the markers replaced by `rendered`."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the page lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n{rendered}\n{END}{tail}"


def main(argv: list[str]) -> None:
    rendered = render_markdown()
    if not argv:
        print(rendered)
        return
    page = Path(argv[0])
    page.write_text(replace_section(page.read_text(encoding="utf-8"), rendered), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
