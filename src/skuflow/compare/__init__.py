"""`skuflow compare`: choreography and orchestration side by side, on the same workload, measured.

A view of `skuflow bench e2e`'s harness (`skuflow.bench.e2e`), not a copy of it: for each mode, a fresh
system in a process of its own (`skuflow up` on free ports of 127.0.0.1, the bench's SMTP sink and FTP
server) on the chosen broker and databases (memory + SQLite by default; a scratch vhost on RabbitMQ and
scratch PostgreSQL databases when given). Setup, not measured: N products at 0 on hand, M users each
wishing for K of them. Then one measured phase, "mixed": half the SKUs reported in stock over HTTP, one
report each, and the other half in one FTP snapshot; every SKU thus becomes available once, and every wish
is due one email. The mode has converged when catalog shows every SKU available, the SMTP sink holds every
due email, and no flow is running.

Every count comes from the system itself, as an operator would read it: each service's `/metrics`, taken
at rest before and after the phase. Latency is from each HTTP report's sending to catalog's
`availability_checked_at` and to the sink's acceptance of the email. `rendering` shows the figures.
"""

from __future__ import annotations

from skuflow.bench.e2e import MODES, BenchError, NotConverged, StackChoice, Workload, progress_bars
from skuflow.bench.e2e import run as run_harness
from skuflow.bench.e2e.figures import Progress
from skuflow.compare.figures import Comparison
from skuflow.compare.rendering import markdown, rows, table

__all__ = [
    "MODES",
    "CompareError",
    "Comparison",
    "NotConverged",
    "Workload",
    "markdown",
    "progress_bars",
    "rows",
    "run",
    "table",
]

CompareError = BenchError


async def run(
    workload: Workload, broker_url: str, postgres_url: str | None, progress: Progress, seed: int = 7
) -> Comparison:
    """Each mode in turn on the same workload; `CompareError` (or `NotConverged`) says why not."""
    choice = StackChoice(broker_url, postgres_url)
    return Comparison(await run_harness(choice, workload, progress, MODES, ("mixed",), seed))
