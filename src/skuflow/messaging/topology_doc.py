"""The declared topology as Markdown, for `docs/architecture.md` (a unit test keeps the page in step).

python -m skuflow.messaging.topology_doc                          # print the table
python -m skuflow.messaging.topology_doc docs/architecture.md     # rewrite the page between its markers
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from skuflow.messaging.broker import DEFAULT_RETRY_DELAYS
from skuflow.messaging.topology import SKUFLOW, Topology, dead_letter_queue, wait_queue

BEGIN = "<!-- topology:begin (generated from skuflow.messaging.topology.SKUFLOW: do not edit by hand) -->"
END = "<!-- topology:end -->"
REGENERATE = "python -m skuflow.messaging.topology_doc docs/architecture.md"


def render_markdown(topology: Topology, retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS) -> str:
    """One row per queue (an exchange without queues gets a row of its own), in declaration order, and the
    wait queues of `retry_delays` (by default the default of `SKUFLOW_RETRY_DELAYS`)."""
    rows = [
        "| exchange | kind | queue | binding key | dead letters |",
        "|---|---|---|---|---|",
    ]
    for exchange in topology.exchanges:
        bound = [queue for queue in topology.queues if queue.exchange == exchange]
        if not bound:
            rows.append(f"| `{exchange.name}` | {exchange.kind} | (none) | | |")
        for queue in bound:
            key = "(none: fanout)" if exchange.kind == "fanout" else f"`{queue.routing_key}`"
            rows.append(
                f"| `{exchange.name}` | {exchange.kind} | `{queue.name}` | {key} | `{dead_letter_queue(queue.name)}` |"
            )
    waits = ", ".join(f"`{name}`" for name in dict.fromkeys(wait_queue("Q", delay) for delay in sorted(retry_delays)))
    return "\n".join(
        [
            *rows,
            "",
            f"Each work queue `Q` also has one wait queue per retry delay: {waits} "
            "(for the default `SKUFLOW_RETRY_DELAYS`), whose expired messages fall back into `Q`.",
        ]
    )


def replace_section(page: str, rendered: str) -> str:
    """`page` with what stands between the markers replaced by `rendered`."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the page lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n{rendered}\n{END}{tail}"


def main(argv: list[str]) -> None:
    rendered = render_markdown(SKUFLOW)
    if not argv:
        print(rendered)
        return
    page = Path(argv[0])
    page.write_text(replace_section(page.read_text(encoding="utf-8"), rendered), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
