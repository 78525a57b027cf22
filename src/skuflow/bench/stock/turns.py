"""`skuflow bench stock`'s runs, taking turns: each run starts its target afresh (`targets`) and loads it
(`load`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from skuflow.bench.e2e.figures import as_bench_errors, machine, platform_versions
from skuflow.bench.e2e.stack import StackChoice
from skuflow.bench.stock.figures import SYSTEMS, StockReport, StockRun, StockWorkload
from skuflow.bench.stock.load import measure
from skuflow.bench.stock.targets import Starter, embedded_system, raw_inventory, skuflow_inventory


async def run(choice: StackChoice, workload: StockWorkload, say: Callable[[str], None]) -> StockReport:
    """`workload.runs` turns, each skuflow's inventory then the raw one (skuflow's alone when embedded: the raw
    one runs on RabbitMQ and PostgreSQL). `BenchError` says why not."""
    embedded = choice.broker == "memory"
    report = StockReport(workload, choice.broker, choice.databases, _inventory(workload, embedded))
    report.versions = platform_versions()
    report.machine = machine()
    starters: dict[str, Starter] = {"skuflow": embedded_system if embedded else skuflow_inventory}
    if not embedded:
        starters["raw"] = raw_inventory
    with as_bench_errors():
        for turn in range(1, workload.runs + 1):
            for system in SYSTEMS:
                if system in starters:
                    say(f"run {turn} of {workload.runs}: {system}")
                    report.runs.append(await _one_run(system, turn, starters[system], choice, workload, report))
    return report


async def _one_run(
    system: str, turn: int, starter: Starter, choice: StackChoice, workload: StockWorkload, report: StockReport
) -> StockRun:
    with tempfile.TemporaryDirectory(prefix=f"skuflow-bench-stock-{system}-") as scratch:
        async with starter(Path(scratch), choice, workload.workers) as target:
            report.versions.update(target.versions)
            return await measure(system, turn, target, workload, Path(scratch))


def _inventory(workload: StockWorkload, embedded: bool) -> str:
    if embedded:
        return "skuflow up (the three services in one process)"
    workers = f" --workers {workload.workers}" if workload.workers else ""
    return f"skuflow serve inventory{workers}"
