"""How `skuflow bench stock` shows its figures: a rich table, a column per system (the medians of its runs) and
one for skuflow / raw (the median of the per-pair ratios, each pair's in brackets)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from rich.table import Table

from skuflow.bench.e2e.rendering import figures_table
from skuflow.bench.stock.figures import SYSTEMS, StockReport, StockRun, summary

Cell = Callable[[list[StockRun], dict[str, Any]], str]  # a system's runs and their medians -> what its column shows


def table(report: StockReport) -> Table:
    workload = report.workload
    window = f"{workload.requests:,} reports" if workload.requests else f"{workload.seconds:g} s"
    versions = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    title = (
        f"skuflow bench stock: POST /v1/stock, one SKU per report ({_skus(workload.skus)}), "
        f"{workload.concurrency} in flight from {workload.clients} generator process(es), {window} after a "
        f"{workload.warmup:g} s warm-up, {workload.runs} run(s) taking turns\n"
        f"{report.inventory} on {report.broker} + {report.databases}; {versions}"
    )
    systems = [system for system in SYSTEMS if report.of(system)]
    ratios = report.ratios()
    with_ratio = bool(report.pairs())
    columns = [*systems, *(["skuflow / raw"] if with_ratio else [])]

    def row(
        label: str, shown: Callable[[list[StockRun], dict[str, Any]], str], ratio: str = ""
    ) -> tuple[str, list[str]]:
        values = [shown(report.of(system), summary(report.of(system))) for system in systems]
        return label, [*values, *([ratio] if with_ratio else [])]

    rows = [
        row(
            "requests/s (each run)",
            lambda runs, median: f"{median['requests_per_second']:,.0f} ({_each(r.requests_per_second for r in runs)})",
            _ratio(ratios["requests_per_second"]),
        ),
        row("answer p50 / p99 / max (ms)", lambda runs, median: _answers(median["answer_ms"])),
        row("errors, all runs", lambda runs, median: _errors(median["errors"])),
        row("stale answers, all runs", lambda runs, median: f"{median['stale']:,}"),
        row("outbox backlog at the end", lambda runs, median: _maybe(median["outbox_backlog"])),
        row("CPU s: inventory", lambda runs, median: _cpu(median, "inventory")),
        row("CPU s: users", lambda runs, median: _cpu(median, "users")),
        row(
            "inventory CPU ms per request",
            lambda runs, median: f"{median['inventory_cpu_ms_per_request']:.3f}",
            _ratio(ratios["inventory_cpu_ms_per_request"]),
        ),
        row("CPU s: load generator(s)", lambda runs, median: _cpu(median, "load")),
        row("load average at the end (each run)", lambda runs, median: _each(r.load_average[0] for r in runs)),
    ]
    return figures_table(title, columns, rows)


def _skus(skus: int) -> str:
    return f"cycling over {skus:,} SKUs" if skus else "a new SKU in each"


def _each(values: Any) -> str:
    return ", ".join(f"{value:,.0f}" if value >= 100 else f"{value:g}" for value in values)


def _ratio(values: list[float]) -> str:
    if not values:
        return ""
    return f"{statistics.median(values):.2f}x ({', '.join(f'{value:.2f}' for value in values)})"


def _answers(percentiles: dict[str, float]) -> str:
    return " / ".join(f"{percentiles[key]:.1f}" for key in ("p50", "p99", "max"))


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in sorted(errors.items())) or "none"


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _cpu(median: dict[str, Any], role: str) -> str:
    seconds = median["cpu_seconds"].get(role)
    return "-" if seconds is None else f"{seconds:.2f}"
