"""`skuflow compare`: choreography and orchestration side by side, on the same workload, measured.

For each mode, a fresh system in this process (the three services on free ports of 127.0.0.1, an SMTP sink,
an FTP server) on the configured broker and databases (memory + SQLite by default; RabbitMQ and PostgreSQL
when given). Setup, not measured: N products at 0 on hand, M users each wishing for K of them. Then the
measured burst: half the SKUs reported in stock over HTTP, one report each, and the other half in one FTP
snapshot; every SKU thus becomes available once, and every wish is due one email. The mode has converged
when catalog's availability equals inventory's for every SKU, the SMTP sink holds every due email, and no
flow is running (in orchestration the orchestrator has had every step's reply).

Every count comes from the system itself, as an operator would read it: each service's `/metrics`
(deliveries per queue, publishes per route, HTTP calls per target and route, flow steps resent and failed),
taken before and after the burst. Latency is from a report's 202 answer to catalog's
`availability_checked_at` and to the sink's acceptance of the email, both recorded by the system.

The modules: `system` (the system it starts, and when it is at rest), `driver` (the workload, through
`skuflow.service_client`), `figures` (what is measured, and the metric diffs), `rendering` (table,
Markdown, progress bars).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from skuflow.bench.memory import peak_resident
from skuflow.compare.driver import Driver
from skuflow.compare.figures import (
    CompareError,
    Comparison,
    ModeFigures,
    NotConverged,
    Progress,
    Workload,
    mode_figures,
)
from skuflow.compare.rendering import markdown, progress_bars, rows, table
from skuflow.compare.system import running
from skuflow.service_client import ServiceError

__all__ = [
    "MODES",
    "CompareError",
    "Comparison",
    "ModeFigures",
    "NotConverged",
    "Workload",
    "markdown",
    "progress_bars",
    "rows",
    "run",
    "table",
]

MODES = ("choreography", "orchestration")


async def run(
    workload: Workload, broker_url: str, postgres_url: str | None, progress: Progress, seed: int = 7
) -> Comparison:
    """Each mode in turn on the same workload; `CompareError` (or `NotConverged`) says why not."""
    databases = "postgresql" if postgres_url else "sqlite"
    comparison = Comparison(workload, broker_url.split("://", 1)[0], databases)
    try:
        for mode in MODES:
            comparison.modes.append(await _one_mode(mode, workload, broker_url, postgres_url, progress, seed))
    except ServiceError as error:
        raise CompareError(str(error)) from None
    except OSError as error:
        raise CompareError(f"cannot reach the broker or the database: {error}") from None
    return comparison


async def _one_mode(
    mode: str, workload: Workload, broker_url: str, postgres_url: str | None, progress: Progress, seed: int
) -> ModeFigures:
    rng = random.Random(seed)  # the same workload in both modes
    skus = [f"SKU-{n:05d}" for n in range(workload.skus)]
    with tempfile.TemporaryDirectory(prefix=f"skuflow-compare-{mode}-") as scratch:
        async with running(mode, Path(scratch), broker_url, postgres_url) as system:
            driver = Driver(system, workload, lambda phase, done, total: progress(f"{mode}: {phase}", done, total))
            await driver.setup(skus, rng)
            before = await system.settled()
            with peak_resident(every=0.02) as peak:
                started = time.monotonic()
                answers = await driver.burst(skus)
                await driver.converge(skus, started)
                elapsed = time.monotonic() - started
            after = await system.settled()
            figures = mode_figures(mode, before, after)
            figures.converge_seconds = elapsed
            figures.peak_memory_mb = peak()[0]
            await driver.latencies(figures, answers)
            return figures
